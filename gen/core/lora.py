"""LoRA adapters on a backbone, loaded through peft's model-level API (it works on every torch module;
UNet2DModel and DiT have no diffusers adapter mixin). The folder layout is the one gen's trainer writes
(gen.training.lora): peft's adapter_config.json + adapter_model.safetensors, and the same weights in
diffusers' pytorch_lora_weights.safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

from gen.errors import ArgumentError, MissingFileError
from gen.io import load_safetensors

WEIGHTS = "adapter_model.safetensors"
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"


def load_lora(model: torch.nn.Module, folder: str | Path, scale: float = 1.0) -> torch.nn.Module:
    """Inject the adapter saved in folder into model (any backbone with the same module names) and load
    its weights; `scale` multiplies the adapter's effect."""
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise MissingFileError(f"lora: {folder} has no adapter_config.json; pass the folder gen's trainer wrote with --lora-rank.")
    config = LoraConfig.from_pretrained(str(folder))
    inject_adapter_in_model(config, model)
    result = set_peft_model_state_dict(model, load_safetensors(folder / WEIGHTS, "lora"))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ArgumentError(f"lora: {len(unexpected)} adapter weights match no module of {type(model).__name__} (e.g. {unexpected[0]}).")
    if scale != 1.0:
        for module in model.modules():
            if hasattr(module, "scaling") and isinstance(module.scaling, dict):
                module.scaling = {k: v * scale for k, v in module.scaling.items()}
    return model.eval()
