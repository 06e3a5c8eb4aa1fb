"""LoRA through peft's model-level API, for any diffusers backbone (UNet2DModel has no adapter mixin, so
gen uses `inject_adapter_in_model` / `get_peft_model_state_dict` / `set_peft_model_state_dict`, which
work on every torch module). Saved as peft's adapter_config.json + adapter_model.safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict

from gen.io import atomic_directory, load_safetensors, save_safetensors

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")
WEIGHTS = "adapter_model.safetensors"


def add_lora(model: torch.nn.Module, rank: int, targets=DEFAULT_TARGETS, alpha: float | None = None) -> LoraConfig:
    """Freeze the model and inject trainable LoRA layers of the given rank into the target modules."""
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora_rank: must be an integer >= 1, got {rank!r}.")
    names = [name for name, _ in model.named_modules()]
    present = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if not present:
        raise ValueError(f"lora_targets: none of {list(targets)} name a module of {type(model).__name__}.")
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=present, init_lora_weights="gaussian")
    model.requires_grad_(False)
    inject_adapter_in_model(config, model)
    return config


def save_lora(model: torch.nn.Module, config: LoraConfig, folder: str | Path, base: str | None = None) -> Path:
    """adapter_config.json + adapter_model.safetensors (+ gen_lora.json naming the base), atomically."""
    state = get_peft_model_state_dict(model)
    with atomic_directory(folder) as tmp:
        config.save_pretrained(str(tmp))
        save_safetensors(tmp / WEIGHTS, state)
        (tmp / "gen_lora.json").write_text(json.dumps({"base": base, "rank": config.r}) + "\n")
    return Path(folder)


def load_lora(model: torch.nn.Module, folder: str | Path, scale: float = 1.0) -> torch.nn.Module:
    """Inject the adapter saved in folder into model (any backbone with the same module names) and load
    its weights; `scale` multiplies the adapter's effect."""
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"lora: {folder} has no adapter_config.json; pass the folder save_lora wrote.")
    config = LoraConfig.from_pretrained(str(folder))
    inject_adapter_in_model(config, model)
    result = set_peft_model_state_dict(model, load_safetensors(folder / WEIGHTS, "lora"))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"lora: {len(unexpected)} adapter weights match no module of {type(model).__name__} (e.g. {unexpected[0]}).")
    if scale != 1.0:
        for module in model.modules():
            if hasattr(module, "scaling") and isinstance(module.scaling, dict):
                module.scaling = {k: v * scale for k, v in module.scaling.items()}
    return model.eval()
