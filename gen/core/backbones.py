"""Backbone adapters: how each diffusers backbone gen supports is called, and what conditions it takes.

A `Backbone` wraps one model and absorbs the differences between the classes: argument names, timestep
shapes, learned-sigma output channels, which conditions are required, and their widths. What the output
*means* (epsilon, v, x0, flow) is the scheduler's business: see `gen.core.prediction` and
`gen.core.denoiser`.

    >>> backbone = Backbone(unet)
    >>> backbone.check_condition({"encoder_hidden_states": text}, batch=4)
    >>> raw = backbone(x, t, {"encoder_hidden_states": text})     # learned-sigma channels kept
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from gen.errors import ArgumentError, ArgumentTypeError

Condition = dict[str, Any]


class PerSample(list):
    """A condition given as a list with one entry per sample (Z-Image's caption features, of varying length):
    stacked, repeated and split like a batch, where other lists (one entry per IP-Adapter) are not."""


@dataclass(frozen=True)
class BackboneSpec:
    """How one backbone class is called and what conditions it takes."""

    accepts: tuple[str, ...]
    requires: tuple[str, ...]
    # condition key -> expected last-dim width (None: not checkable); integer class labels use "num_classes"
    widths: Callable[[Any], dict[str, int | None]]
    spatial_multiple: Callable[[Any], int]
    # (timestep, model input, config, scheduler) -> the `timestep` argument, computed as the stock loop computes it
    timestep: Callable[[torch.Tensor, torch.Tensor, Any, Any], torch.Tensor]
    defaults: Callable[[Any], Condition] = lambda config: {}
    # the stock pipeline's row order for classifier-free guidance: kept, so guided outputs match it bit for bit
    conditional_first: bool = False
    # "channels": (batch, channels, height, width); "tokens": packed (batch, tokens, channels), as Flux's
    layout: str = "channels"
    # the model predicts the negated velocity (Lumina 2's time runs the other way)
    negated: bool = False
    # the stock loop casts the input to the model's dtype and the output to float32 (SANA)
    float_output: bool = False
    # condition tensors that are not per sample (Flux's token position ids), shared by every row
    shared: tuple[str, ...] = ()
    # conditions given as lists with one entry per sample (Z-Image's captions, Qwen-Image's image shapes)
    per_sample: tuple[str, ...] = ()
    # a one-row condition is broadcast over the batch (Flux's transformer takes one negative prompt for all)
    broadcasts_one: bool = False
    # (config, condition, rows) -> the condition this model takes: lets a run's condition reach another model of
    # the family (a guidance-distilled Flux base under a schnell run, and back)
    adapt: Callable[[Any, Condition, int], Condition] | None = None
    # the name of the model's timestep argument
    timestep_argument: str = "timestep"
    # (model, input, timestep, condition) -> output, for a model not called as model(x, timestep=..., **cond)
    call: Callable[[Any, torch.Tensor, torch.Tensor, Condition], torch.Tensor] | None = None
    # packed layouts that a tiler can cut: (rows, token rows, token columns, device) -> the condition entries
    # that place a tile's tokens (Flux's img_ids, Qwen-Image's img_shapes); 2x2 patches per token
    tile_condition: Callable[[int, int, int, Any], Condition] | None = None


def _scalar_timestep(t, x, config, scheduler):
    return torch.as_tensor(t, device=x.device)


def _expanded_timestep(t, x, config, scheduler):
    return torch.as_tensor(t, device=x.device).reshape(1).expand(x.shape[0])


def _flux_timestep(t, x, config, scheduler):  # FluxPipeline: t.expand(batch).to(latents.dtype) / 1000
    return torch.as_tensor(t, device=x.device).expand(x.shape[0]).to(x.dtype) / 1000


def _lumina2_timestep(t, x, config, scheduler):  # Lumina2Pipeline: 1 - t / num_train_timesteps, expanded
    return (1 - torch.as_tensor(t, device=x.device) / scheduler.config.num_train_timesteps).expand(x.shape[0])


def _auraflow_timestep(t, x, config, scheduler):  # AuraFlowPipeline: torch.tensor([t / 1000]).expand(batch)
    return (torch.as_tensor(t) / 1000).reshape(1).expand(x.shape[0]).to(x.device, dtype=x.dtype)


def _z_image_timestep(t, x, config, scheduler):  # ZImagePipeline: (1000 - t.expand(batch)) / 1000
    return (1000 - torch.as_tensor(t, device=x.device).expand(x.shape[0])) / 1000


def _z_image_call(model, x, timestep, cond):
    """ZImagePipeline's call: one (channels, 1, height, width) tensor per sample in and out, captions a list."""
    cond = dict(cond)
    samples = list(x.to(model.dtype).unsqueeze(2).unbind(dim=0))
    out = model(samples, timestep, list(cond.pop("cap_feats")), **cond, return_dict=False)[0]
    return torch.stack([o.float() for o in out], dim=0).squeeze(2)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): 2x2 patches as tokens, as FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for a (height, width) latent, as FluxPipeline._unpack_latents."""
    b, _, channels = tokens.shape
    return tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, channels // 4, height, width)


def _flux_tile(rows, token_rows, token_columns, device):
    """A tile's token positions (FluxPipeline._prepare_latent_image_ids: 0, row, column), shared by all rows."""
    ids = torch.zeros(token_rows, token_columns, 3, device=device)
    ids[..., 1] += torch.arange(token_rows, device=device)[:, None]
    ids[..., 2] += torch.arange(token_columns, device=device)[None, :]
    return {"img_ids": ids.reshape(token_rows * token_columns, 3)}


def _qwen_tile(rows, token_rows, token_columns, device):
    return {"img_shapes": PerSample([[(1, token_rows, token_columns)]] * rows)}


def _flux_condition(config, cond, rows):
    """Flux dev embeds a guidance value, schnell takes none: a condition from one serves the other (dev gets
    diffusers' default 3.5 where the run has none)."""
    if config.guidance_embeds and cond.get("guidance") is None:
        return {**cond, "guidance": torch.full((rows,), 3.5, device=cond["encoder_hidden_states"].device)}
    if not config.guidance_embeds and cond.get("guidance") is not None:
        return {**cond, "guidance": None}
    return cond


def _sana_timestep(t, x, config, scheduler):  # SanaPipeline: t.expand(batch) * timestep_scale
    return torch.as_tensor(t, device=x.device).expand(x.shape[0]) * config.timestep_scale


def _unet_multiple(config) -> int:
    return 2 ** (len(config.block_out_channels) - 1)


def _unet2d_widths(config) -> dict:
    kind = config.class_embed_type
    if kind is None and config.num_class_embeds is not None:
        return {"num_classes": config.num_class_embeds}
    if kind == "identity":
        return {"class_labels": config.block_out_channels[0] * 4}
    return {}


def _unet2d_condition_widths(config) -> dict:
    widths: dict[str, int | None] = {}
    cross = config.encoder_hid_dim if config.encoder_hid_dim is not None else config.cross_attention_dim
    widths["encoder_hidden_states"] = cross if isinstance(cross, int) else None
    kind = config.class_embed_type
    if kind is None and config.num_class_embeds is not None:
        widths["num_classes"] = config.num_class_embeds
    elif kind in ("projection", "simple_projection"):
        widths["class_labels"] = config.projection_class_embeddings_input_dim
    return widths


# Keyed by class name and matched along the model's MRO among diffusers classes, so that importing gen does
# not import diffusers' model zoo (seconds of start-up for `gen --help`).
_SPECS: dict[str, BackboneSpec] = {
    "UNet2DModel": BackboneSpec(
        accepts=("class_labels",),
        requires=(),
        widths=_unet2d_widths,
        spatial_multiple=_unet_multiple,
        timestep=_scalar_timestep,
    ),
    "UNet2DConditionModel": BackboneSpec(
        accepts=(
            "encoder_hidden_states",
            "class_labels",
            "encoder_attention_mask",
            "timestep_cond",
            "added_cond_kwargs",
            "cross_attention_kwargs",
        ),
        requires=("encoder_hidden_states",),
        widths=_unet2d_condition_widths,
        spatial_multiple=_unet_multiple,
        timestep=_scalar_timestep,
    ),
    "DiTTransformer2DModel": BackboneSpec(
        accepts=("class_labels",),
        requires=("class_labels",),
        # one extra row: the null class used for classifier-free guidance
        widths=lambda c: {"num_classes": c.num_embeds_ada_norm + 1},
        spatial_multiple=lambda c: c.patch_size,
        timestep=_expanded_timestep,
        conditional_first=True,  # DiTPipeline stacks [class labels; null class]
    ),
    "PixArtTransformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "encoder_attention_mask", "added_cond_kwargs", "cross_attention_kwargs"),
        requires=("encoder_hidden_states",),
        widths=lambda c: {"encoder_hidden_states": c.caption_channels},
        spatial_multiple=lambda c: c.patch_size,
        timestep=_expanded_timestep,
        defaults=lambda c: {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}},
    ),
    "SD3Transformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "pooled_projections", "joint_attention_kwargs", "skip_layers"),
        requires=("encoder_hidden_states", "pooled_projections"),
        widths=lambda c: {"encoder_hidden_states": c.joint_attention_dim, "pooled_projections": c.pooled_projection_dim},
        spatial_multiple=lambda c: c.patch_size,
        timestep=_expanded_timestep,
    ),
    "FluxTransformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "pooled_projections", "guidance", "txt_ids", "img_ids", "joint_attention_kwargs"),
        requires=("encoder_hidden_states", "pooled_projections", "txt_ids", "img_ids"),
        widths=lambda c: {"encoder_hidden_states": c.joint_attention_dim, "pooled_projections": c.pooled_projection_dim},
        spatial_multiple=lambda c: 1,
        timestep=_flux_timestep,
        layout="tokens",
        shared=("txt_ids", "img_ids"),
        broadcasts_one=True,
        adapt=_flux_condition,
        tile_condition=_flux_tile,
    ),
    "Lumina2Transformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "encoder_attention_mask", "attention_kwargs"),
        requires=("encoder_hidden_states", "encoder_attention_mask"),
        widths=lambda c: {"encoder_hidden_states": c.cap_feat_dim},
        spatial_multiple=lambda c: c.patch_size,
        timestep=_lumina2_timestep,
        negated=True,
    ),
    "AuraFlowTransformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "attention_kwargs"),
        requires=("encoder_hidden_states",),
        widths=lambda c: {"encoder_hidden_states": c.joint_attention_dim},
        spatial_multiple=lambda c: c.patch_size,
        timestep=_auraflow_timestep,
    ),
    "QwenImageTransformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "encoder_hidden_states_mask", "img_shapes", "guidance", "attention_kwargs"),
        requires=("encoder_hidden_states", "img_shapes"),
        widths=lambda c: {"encoder_hidden_states": c.joint_attention_dim},
        spatial_multiple=lambda c: 1,
        timestep=_flux_timestep,  # QwenImagePipeline: t.expand(batch).to(latents.dtype) / 1000, as Flux
        layout="tokens",
        per_sample=("img_shapes",),
        tile_condition=_qwen_tile,
    ),
    "ZImageTransformer2DModel": BackboneSpec(
        accepts=("cap_feats", "joint_attention_kwargs", "patch_size", "f_patch_size"),
        requires=("cap_feats",),
        widths=lambda c: {},
        spatial_multiple=lambda c: 1,
        timestep=_z_image_timestep,
        negated=True,
        conditional_first=True,  # ZImagePipeline stacks [prompt; negative prompt]
        timestep_argument="t",
        call=_z_image_call,
        per_sample=("cap_feats",),
    ),
    "SanaTransformer2DModel": BackboneSpec(
        accepts=("encoder_hidden_states", "encoder_attention_mask", "attention_kwargs"),
        requires=("encoder_hidden_states",),
        widths=lambda c: {"encoder_hidden_states": c.caption_channels},
        spatial_multiple=lambda c: c.patch_size,
        timestep=_sana_timestep,
        float_output=True,
    ),
}
SUPPORTED_BACKBONE_NAMES: tuple[str, ...] = tuple(_SPECS)


def supported_backbones() -> tuple[type, ...]:
    """The diffusers classes gen supports."""
    import diffusers

    return tuple(getattr(diffusers, name) for name in SUPPORTED_BACKBONE_NAMES)


def unwrap(model):
    """The module behind `torch.compile`."""
    return getattr(model, "_orig_mod", model)


def backbone_spec(model) -> BackboneSpec:
    for cls in type(unwrap(model)).__mro__:
        if cls.__name__ in _SPECS and cls.__module__.startswith("diffusers."):
            return _SPECS[cls.__name__]
    names = ", ".join(_SPECS)
    raise ArgumentTypeError(
        f"model: gen.Denoiser supports {names}; got {type(unwrap(model)).__name__}. Load the backbone as one of these "
        "diffusers classes (e.g. UNet2DConditionModel.from_pretrained(repo, subfolder='unet'))."
    )


class Backbone:
    """One diffusers backbone behind one call: ``backbone(x, t, cond)`` -> the raw output (learned-sigma
    channels kept), with the inputs checked by `check_latents` / `check_condition`."""

    def __init__(self, model):
        self.model = model
        self.spec = backbone_spec(model)

    @property
    def name(self) -> str:
        return type(unwrap(self.model)).__name__

    @property
    def config(self):
        return self.model.config

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def learns_variance(self) -> bool:
        out_channels = self.config.get("out_channels") or self.in_channels
        return out_channels == 2 * self.in_channels

    def widths(self) -> dict[str, int | None]:
        return self.spec.widths(self.config)

    @property
    def channel_dim(self) -> int:
        return -1 if self.spec.layout == "tokens" else 1

    def check_latents(self, x, name: str = "latents") -> None:
        tokens = self.spec.layout == "tokens"
        layout, ndim = ("(batch, tokens, channels)", 3) if tokens else ("(batch, channels, height, width)", 4)
        if not isinstance(x, torch.Tensor) or x.ndim != ndim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ArgumentError(f"{name}: {self.name} takes {layout} latents, got {got}.")
        if x.shape[self.channel_dim] != self.in_channels:
            shape = f"(batch, N, {self.in_channels})" if tokens else f"(batch, {self.in_channels}, H, W)"
            raise ArgumentError(f"{name}: the backbone takes {self.in_channels} channels, got shape {tuple(x.shape)}; " f"draw latents of shape {shape}.")
        multiple = self.spec.spatial_multiple(self.config)
        if not tokens and (x.shape[2] % multiple or x.shape[3] % multiple):
            raise ArgumentError(f"{name}: height and width must be multiples of {multiple} for this backbone, got {tuple(x.shape[2:])}.")
        if not torch.isfinite(x).all():
            raise ArgumentError(f"{name}: contains NaN or infinite values.")

    def required(self) -> tuple[str, ...]:
        """The conditions a call cannot do without (class labels where the model has a class embedding)."""
        widths = self.widths()
        extra = ("class_labels",) if ("num_classes" in widths or "class_labels" in widths) and "class_labels" not in self.spec.requires else ()
        return self.spec.requires + extra

    def check_condition(self, cond: Condition | None, batch: int, name: str = "cond") -> None:
        if cond is not None and not isinstance(cond, dict):
            raise ArgumentTypeError(f"{name}: expected a dict of backbone keyword arguments, got {type(cond).__name__}.")
        cond = cond or {}
        unknown = set(cond) - set(self.spec.accepts)
        if unknown:
            raise ArgumentError(f"{name}: {self.name} takes {self.spec.accepts}, not {sorted(unknown)}.")
        missing = [k for k in self.required() if k not in cond]
        if missing:
            raise ArgumentError(f"{name}: {self.name} needs {missing}; pass them in {name}={{...}}.")
        widths = self.widths()
        for key, value in cond.items():
            if not isinstance(value, torch.Tensor):
                continue
            one = value.ndim > 0 and value.shape[0] == 1 and self.spec.broadcasts_one
            if value.ndim > 0 and value.shape[0] != batch and key not in self.spec.shared and not one:
                raise ArgumentError(f"{name}[{key!r}]: batch {value.shape[0]} does not match the latents' batch {batch}.")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise ArgumentError(f"{name}[{key!r}]: contains NaN or infinite values.")
            if (
                key == "class_labels"
                and "num_classes" in widths
                and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool or value.ndim != 1)
            ):
                raise ArgumentError(
                    f"{name}['class_labels']: {self.name} looks labels up in a table of {widths['num_classes']} classes, so they must be a 1-D "
                    f"integer tensor (one label per row), got {str(value.dtype).replace('torch.', '')} of shape {tuple(value.shape)}."
                )
            if key == "class_labels" and not value.is_floating_point() and "num_classes" in widths:
                n = widths["num_classes"]
                if value.numel() and (value.min() < 0 or value.max() >= n):
                    raise ArgumentError(f"{name}['class_labels']: labels must lie in [0, {n}), got {value.tolist()}.")
            expected = widths.get(key)
            if expected is not None and value.is_floating_point() and value.shape[-1] != expected:
                raise ArgumentError(
                    f"{name}[{key!r}]: width {value.shape[-1]} does not match the backbone's {expected}; "
                    f"project or re-encode the condition to {expected} features."
                )

    def __call__(self, x: torch.Tensor, t, cond: Condition | None = None, scheduler=None) -> torch.Tensor:
        kwargs = {**self.spec.defaults(self.config), **(cond or {})}
        if self.spec.adapt is not None:
            kwargs = self.spec.adapt(self.config, kwargs, x.shape[0])
        timestep = self.spec.timestep(t, x, self.config, scheduler)
        if self.spec.call is not None:
            out = self.spec.call(self.model, x, timestep, kwargs)
            return -out if self.spec.negated else out
        if self.spec.float_output:
            return self.model(x.to(self.model.dtype), timestep=timestep, **kwargs, return_dict=False)[0].float()
        out = self.model(x, timestep=timestep, **kwargs, return_dict=False)[0]
        return -out if self.spec.negated else out

    def embedding_condition(self, embeddings: torch.Tensor) -> Condition:
        """How a per-sample embedding (B, D) conditions this backbone: as one cross-attention token, or as the
        tokens the UNet's image projection makes of it (encoder_hid_dim_type "image_proj": 32 tokens the
        cross-attention can route to different places); and also as the class-embedding input where the
        UNet projects class vectors into its time embedding (class_embed_type "projection"), which reaches
        every resnet block."""
        cond: Condition = {"encoder_hidden_states": embeddings[:, None]}
        if self.config.get("encoder_hid_dim_type") == "image_proj":  # projected to several tokens (IP-Adapter's ImageProjection)
            cond["added_cond_kwargs"] = {"image_embeds": embeddings}
        if self.config.get("class_embed_type") in ("projection", "simple_projection"):
            cond["class_labels"] = embeddings
        return cond

    def split_variance(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, learned-variance channels or None)."""
        if not self.learns_variance:
            return raw, None
        return raw.split(self.in_channels, dim=self.channel_dim)


def condition_at(cond: Condition, path):
    """cond[path[0]][path[1]]... (a path may be one key), or None where a key is missing."""
    for key in (path,) if isinstance(path, str) else path:
        if not isinstance(cond, dict) or key not in cond:
            return None
        cond = cond[key]
    return cond


def with_condition(cond: Condition, path, value) -> Condition:
    """A copy of cond with the value at path replaced (nested dicts copied on the way down)."""
    path = (path,) if isinstance(path, str) else tuple(path)
    out = dict(cond)
    out[path[0]] = value if len(path) == 1 else with_condition(out.get(path[0]) or {}, path[1:], value)
    return out


def stack_branches(first: Condition, second: Condition, batch: int) -> Condition:
    """One condition for the [first; second] batch (the two branches of classifier-free guidance) that
    runs in a single call; values that are not per-sample tensors are taken from `second`."""
    return {key: _stack(first.get(key, second.get(key)), second.get(key, first.get(key)), batch) for key in second.keys() | first.keys()}


def _stack(a, b, batch: int):
    if isinstance(a, PerSample) and isinstance(b, PerSample):
        return PerSample(a + b)
    if isinstance(a, dict) and isinstance(b, dict):
        return stack_branches(a, b, batch)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):  # e.g. one tensor per IP-Adapter
        return type(b)(_stack(x, y, batch) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and a.ndim > 0 and a.shape[0] == batch:
        return torch.cat([a, b])
    return b


def repeat_condition(cond: Condition | None, times: int, batch: int, shared: tuple[str, ...] = ()) -> Condition | None:
    """Tile per-sample condition tensors `times` over the batch (candidate-major: row m*batch + b); `shared`
    keys (a spec's token positions) stay whole even where their length happens to equal the batch."""
    if cond is None or times == 1:
        return cond
    return {key: value if key in shared else _repeat(value, times, batch) for key, value in cond.items()}


def _repeat(value, times: int, batch: int):
    if isinstance(value, PerSample):
        return PerSample(list(value) * times)
    if isinstance(value, dict):
        return repeat_condition(value, times, batch)
    if isinstance(value, (list, tuple)):
        return type(value)(_repeat(v, times, batch) for v in value)
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value.repeat(times, *([1] * (value.ndim - 1)))
    return value
