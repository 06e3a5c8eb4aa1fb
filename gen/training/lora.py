"""LoRA through peft's model-level API, for any diffusers backbone (UNet2DModel has no adapter mixin, so
gen uses `inject_adapter_in_model` / `get_peft_model_state_dict` / `set_peft_model_state_dict`, which
work on every torch module).

A saved LoRA folder holds peft's adapter_config.json + adapter_model.safetensors, and the same weights in
diffusers' format, pytorch_lora_weights.safetensors (keys prefixed by the backbone's component name), so
`pipe.load_lora_weights(folder)` loads it into a Stable Diffusion pipeline, and gen's pipelines take it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model

from gen.errors import ArgumentError
from gen.core.lora import DIFFUSERS_WEIGHTS, WEIGHTS, load_lora, save_adapter  # noqa: F401  (load_lora: where users import it from)
from gen.io import atomic_directory, save_safetensors

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


def add_lora(model: torch.nn.Module, rank: int, targets=DEFAULT_TARGETS, alpha: float | None = None, strict: bool = False) -> LoraConfig:
    """Freeze the model and inject trainable LoRA layers of the given rank into the target modules; `strict`
    (targets the user named): every target must name a module, else only one of them must."""
    if not isinstance(rank, int) or rank < 1:
        raise ArgumentError(f"lora_rank: must be an integer >= 1, got {rank!r}.")
    names = [name for name, _ in model.named_modules()]
    present = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if not present:
        raise ArgumentError(f"lora_targets: none of {list(targets)} name a module of {type(model).__name__}.")
    missing = [t for t in targets if t not in present]
    if strict and missing:
        raise ArgumentError(f"lora_targets: {missing} name no module of {type(model).__name__}; check the spelling or drop them.")
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=present, init_lora_weights="gaussian")
    model.requires_grad_(False)
    inject_adapter_in_model(config, model)
    return config


def save_lora(
    model: torch.nn.Module,
    config: LoraConfig,
    folder: str | Path,
    base: str | None = None,
    component: str = "unet",
    encoders: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """adapter_config.json + adapter_model.safetensors, pytorch_lora_weights.safetensors (diffusers' layout:
    `<component>.`-prefixed keys) and gen_lora.json naming the base, atomically. `encoders` {name: (text
    encoder, its LoraConfig)}: each also into a subfolder NAME/ (what `gen sample --lora` loads) and into the
    diffusers file with `NAME.`-prefixed keys (what `pipe.load_lora_weights` loads). `state_dict`: the model's whole
    state where its own parameters are shards (FSDP)."""
    encoders = encoders or {}
    with atomic_directory(folder) as tmp:
        state = {f"{component}.{k}": v for k, v in save_adapter(model, config, tmp, state_dict).items()}
        for name, (encoder, encoder_config) in encoders.items():
            (tmp / name).mkdir()
            state.update({f"{name}.{k}": v for k, v in save_adapter(encoder, encoder_config, tmp / name).items()})
        save_safetensors(tmp / DIFFUSERS_WEIGHTS, state)
        (tmp / "gen_lora.json").write_text(json.dumps({"base": base, "rank": config.r, "component": component, "text_encoders": sorted(encoders)}) + "\n")
    return Path(folder)
