"""LoRA adapters on a backbone, loaded through peft's model-level API (it works on every torch module;
UNet2DModel and DiT have no diffusers adapter mixin). The folder layout is the one gen's trainer writes
(gen.training.lora): peft's adapter_config.json + adapter_model.safetensors, and the same weights in
diffusers' pytorch_lora_weights.safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

from gen.errors import ArgumentError, MissingFileError, require_number
from gen.io import load_safetensors

WEIGHTS = "adapter_model.safetensors"
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"


def save_adapter(model: torch.nn.Module, config: LoraConfig, folder: str | Path, state_dict: dict | None = None) -> dict:
    """peft's adapter_config.json and the adapter's weights (adapter_model.safetensors) into an existing folder:
    what `load_lora` reads back (`state_dict`: the model's whole state, where its parameters are FSDP shards).
    Returns the weights."""
    from peft import get_peft_model_state_dict

    from gen.io import save_safetensors

    state = get_peft_model_state_dict(model, state_dict=state_dict)
    config.save_pretrained(str(folder))
    save_safetensors(Path(folder) / WEIGHTS, state)
    return state


def load_lora(model: torch.nn.Module, folder: str | Path, scale: float = 1.0) -> torch.nn.Module:
    """Inject the adapter saved in folder into model (any backbone with the same module names) and load
    its weights; `scale` multiplies the adapter's effect. The folder is checked against the model before
    the model is touched (config readable, weights finite, every weight matching a module of the model
    in name, rank and width), so a LoRA of another model or rank is refused with the model unchanged."""
    folder = Path(folder)
    scale = require_number(scale, "adapter_scale")
    if not (folder / "adapter_config.json").is_file():
        raise MissingFileError(f"lora: {folder} has no adapter_config.json; pass the folder gen's trainer wrote with --lora-rank.")
    try:
        config = LoraConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise ArgumentError(
            f"lora: {folder / 'adapter_config.json'} is not a readable peft LoRA config ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            "the folder is damaged: train or copy it again."
        ) from None
    state = load_safetensors(folder / WEIGHTS, "lora")
    check_lora_fits(model, config, state, folder)
    inject_adapter_in_model(config, model)
    set_peft_model_state_dict(model, state)
    if scale != 1.0:
        for module in model.modules():
            if hasattr(module, "scaling") and isinstance(module.scaling, dict):
                module.scaling = {k: v * scale for k, v in module.scaling.items()}
    return model.eval()


def check_lora_fits(model: torch.nn.Module, config: LoraConfig, state: dict, folder: Path) -> None:
    """Every adapter weight finite and matching a module of model: its name, the config's rank, the
    module's input and output widths."""
    modules = dict(model.named_modules())
    where = folder / WEIGHTS
    if not state:
        raise ArgumentError(f"lora: {where} holds no weights.")
    for key, value in state.items():
        if not torch.isfinite(value).all():
            raise ArgumentError(f"lora: {where} holds non-finite values ({key}); the LoRA diverged in training. Use an earlier checkpoint.")
        name, _, part = key.rpartition(".lora_")
        module = modules.get(name)
        if module is None or part not in ("A.weight", "B.weight"):
            raise ArgumentError(
                f"lora: {where} has weights for {name or key!r}, which is no module of this {type(model).__name__}; " "the LoRA was trained on another model."
            )
        width_in = getattr(module, "in_features", getattr(module, "in_channels", None))
        width_out = getattr(module, "out_features", getattr(module, "out_channels", None))
        rank, expected = (value.shape[0], width_in) if part == "A.weight" else (value.shape[1], width_out)
        width = value.shape[1] if part == "A.weight" else value.shape[0]
        if rank != config.r or width != expected:
            raise ArgumentError(
                f"lora: {key} in {where} is {tuple(value.shape)}, but rank {config.r} on {name} ({type(module).__name__} {width_in} -> {width_out}) "
                "needs another shape; the LoRA was trained on another model or its adapter_config.json was edited."
            )
