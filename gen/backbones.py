"""`Denoiser`: one call over the diffusers backbones gen supports.

A Denoiser pairs a backbone with the scheduler that defines its noise levels. It absorbs the backbones'
differences (argument names, timestep shapes, learned-sigma channels, what conditions each takes) and the
prediction types, and answers the guided model output together with its clean-sample (x0) estimate:

    >>> den = Denoiser(unet, scheduler)
    >>> out = den(x, t, cond={"encoder_hidden_states": text}, uncond={"encoder_hidden_states": null},
    ...           guidance_scale=7.5)
    >>> out.output, out.x0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import (
    DiTTransformer2DModel,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from gen import prediction
from gen.prediction import NoiseLevel

Condition = dict[str, Any]


@dataclass(frozen=True)
class _Backbone:
    """How one backbone class is called and what conditions it takes."""

    accepts: tuple[str, ...]
    requires: tuple[str, ...]
    # condition key -> expected last-dim width (None: not checkable); integer class labels use "num_classes"
    widths: Callable[[Any], dict[str, int | None]]
    spatial_multiple: Callable[[Any], int]
    expand_timestep: bool
    defaults: Callable[[Any], Condition] = lambda config: {}


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


_BACKBONES: dict[type, _Backbone] = {
    UNet2DModel: _Backbone(
        accepts=("class_labels",),
        requires=(),
        widths=_unet2d_widths,
        spatial_multiple=_unet_multiple,
        expand_timestep=False,
    ),
    UNet2DConditionModel: _Backbone(
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
        expand_timestep=False,
    ),
    DiTTransformer2DModel: _Backbone(
        accepts=("class_labels",),
        requires=("class_labels",),
        # one extra row: the null class used for classifier-free guidance
        widths=lambda c: {"num_classes": c.num_embeds_ada_norm + 1},
        spatial_multiple=lambda c: c.patch_size,
        expand_timestep=True,
    ),
    PixArtTransformer2DModel: _Backbone(
        accepts=("encoder_hidden_states", "encoder_attention_mask", "added_cond_kwargs", "cross_attention_kwargs"),
        requires=("encoder_hidden_states",),
        widths=lambda c: {"encoder_hidden_states": c.caption_channels},
        spatial_multiple=lambda c: c.patch_size,
        expand_timestep=True,
        defaults=lambda c: {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}},
    ),
    SD3Transformer2DModel: _Backbone(
        accepts=("encoder_hidden_states", "pooled_projections", "joint_attention_kwargs", "skip_layers"),
        requires=("encoder_hidden_states", "pooled_projections"),
        widths=lambda c: {"encoder_hidden_states": c.joint_attention_dim, "pooled_projections": c.pooled_projection_dim},
        spatial_multiple=lambda c: c.patch_size,
        expand_timestep=True,
    ),
}
SUPPORTED_BACKBONES: tuple[type, ...] = tuple(_BACKBONES)


def _backbone_of(model) -> _Backbone:
    for cls in type(model).__mro__:
        if cls in _BACKBONES:
            return _BACKBONES[cls]
    names = ", ".join(c.__name__ for c in _BACKBONES)
    raise TypeError(
        f"model: gen.Denoiser supports {names}; got {type(model).__name__}. Load the backbone as one of these "
        "diffusers classes (e.g. UNet2DConditionModel.from_pretrained(repo, subfolder='unet'))."
    )


class DenoiserOutput:
    """The guided model output (in the scheduler's units) and its clean-sample estimate x0.

    x0 is computed on first access: plain sampling never reads it, hooks and transitions do.
    `evaluations` counts the rows that went through the backbone (doubled under guidance).
    """

    def __init__(self, output: torch.Tensor, evaluations: int, x0: torch.Tensor | None = None, x0_fn=None):
        self.output = output
        self.evaluations = evaluations
        self._x0, self._x0_fn = x0, x0_fn

    @property
    def x0(self) -> torch.Tensor:
        if self._x0 is None:
            self._x0 = self._x0_fn()
        return self._x0

    @classmethod
    def concat(cls, parts: list["DenoiserOutput"]) -> "DenoiserOutput":
        if len(parts) == 1:
            return parts[0]
        return cls(
            output=torch.cat([p.output for p in parts]),
            evaluations=sum(p.evaluations for p in parts),
            x0_fn=lambda: torch.cat([p.x0 for p in parts]),
        )

    def select(self, index: torch.Tensor) -> "DenoiserOutput":
        """The rows `index` (e.g. the chosen candidates), evaluations not carried over."""
        return DenoiserOutput(output=self.output[index], evaluations=0, x0_fn=lambda: self.x0[index])


def _batch_size(value) -> int | None:
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return value.shape[0]
    if isinstance(value, dict):
        sizes = [_batch_size(v) for v in value.values()]
        sizes = [s for s in sizes if s is not None]
        return sizes[0] if sizes else None
    return None


def _stack_branches(uncond: Condition, cond: Condition, batch: int) -> Condition:
    """One condition for the [uncond; cond] batch that classifier-free guidance runs in a single call."""
    merged: Condition = {}
    for key in cond.keys() | uncond.keys():
        a, b = uncond.get(key, cond.get(key)), cond.get(key, uncond.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            merged[key] = _stack_branches(a, b, batch)
        elif isinstance(a, torch.Tensor) and a.ndim > 0 and a.shape[0] == batch:
            merged[key] = torch.cat([a, b])
        else:
            merged[key] = b
    return merged


def repeat_condition(cond: Condition | None, times: int, batch: int) -> Condition | None:
    """Tile per-sample condition tensors `times` over the batch (candidate-major: row m*batch + b)."""
    if cond is None or times == 1:
        return cond
    out: Condition = {}
    for key, value in cond.items():
        if isinstance(value, dict):
            out[key] = repeat_condition(value, times, batch)
        elif isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
            out[key] = value.repeat(times, *([1] * (value.ndim - 1)))
        else:
            out[key] = value
    return out


class Denoiser:
    """A diffusers backbone with its scheduler: ``den(x, t, cond, uncond, guidance_scale)`` ->
    guided output + x0.

    Args:
        model: UNet2DModel, UNet2DConditionModel, DiTTransformer2DModel, PixArtTransformer2DModel or
            SD3Transformer2DModel (LoRA-adapted or `torch.compile`d ones too).
        scheduler: any diffusers scheduler gen models (see `gen.prediction`); it sets the noise levels and
            what the model predicts.
        prediction_type: optional assertion of what the model predicts (``"epsilon"``, ``"v_prediction"``,
            ``"sample"``, ``"flow"``); it must be what the scheduler is configured to consume.
    """

    def __init__(self, model, scheduler, prediction_type: str | None = None):
        self.model = model
        self.backbone = _backbone_of(getattr(model, "_orig_mod", model))
        self.scheduler = scheduler
        served = prediction.scheduler_prediction_type(scheduler)
        if prediction_type is not None and prediction_type != served:
            allowed = prediction.served_prediction_types(scheduler)
            fix = (
                f"{type(scheduler).__name__}.from_config(scheduler.config, prediction_type={prediction_type!r})"
                if prediction_type in allowed
                else f"a scheduler that consumes {prediction_type!r} predictions"
            )
            raise ValueError(
                f"prediction_type: the model predicts {prediction_type!r} but {type(scheduler).__name__} is "
                f"configured for {served!r} (it can serve {allowed}). Pass scheduler={fix}."
            )
        if served not in prediction.PREDICTION_TYPES:
            raise ValueError(
                f"scheduler: prediction_type {served!r} in {type(scheduler).__name__}'s config is not one of "
                f"{prediction.PREDICTION_TYPES}; set it with from_config(..., prediction_type=...)."
            )
        self.prediction_type = served
        self.family = prediction.schedule_family(scheduler)

    # -- what the backbone takes ---------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def learns_variance(self) -> bool:
        out_channels = self.config.out_channels or self.in_channels
        return out_channels == 2 * self.in_channels

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def with_scheduler(self, scheduler) -> "Denoiser":
        """The same backbone over another scheduler (e.g. a stochastic one for value guidance)."""
        return Denoiser(self.model, scheduler)

    def check_latents(self, x, name: str = "latents") -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a (batch, channels, height, width) tensor, got {got}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name}: the backbone takes {self.in_channels} channels, got shape {tuple(x.shape)}; "
                f"draw latents of shape (batch, {self.in_channels}, H, W)."
            )
        multiple = self.backbone.spatial_multiple(self.config)
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"{name}: height and width must be multiples of {multiple} for this backbone, got "
                f"{tuple(x.shape[2:])}."
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or infinite values.")

    def check_condition(self, cond: Condition | None, batch: int, name: str = "cond") -> None:
        cond = cond or {}
        if not isinstance(cond, dict):
            raise TypeError(f"{name}: expected a dict of backbone keyword arguments, got {type(cond).__name__}.")
        model_name = type(getattr(self.model, "_orig_mod", self.model)).__name__
        unknown = set(cond) - set(self.backbone.accepts)
        if unknown:
            raise ValueError(
                f"{name}: {model_name} takes {self.backbone.accepts}, not {sorted(unknown)}."
            )
        missing = [k for k in self.backbone.requires if k not in cond]
        if missing:
            raise ValueError(f"{name}: {model_name} needs {missing}; pass them in {name}={{...}}.")
        widths = self.backbone.widths(self.config)
        for key, value in cond.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.ndim > 0 and value.shape[0] != batch:
                raise ValueError(f"{name}[{key!r}]: batch {value.shape[0]} does not match the latents' batch {batch}.")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise ValueError(f"{name}[{key!r}]: contains NaN or infinite values.")
            if key == "class_labels" and not value.is_floating_point() and "num_classes" in widths:
                n = widths["num_classes"]
                if value.numel() and (value.min() < 0 or value.max() >= n):
                    raise ValueError(f"{name}['class_labels']: labels must lie in [0, {n}), got {value.tolist()}.")
            expected = widths.get(key)
            if expected is not None and value.is_floating_point() and value.shape[-1] != expected:
                raise ValueError(
                    f"{name}[{key!r}]: width {value.shape[-1]} does not match the backbone's {expected}; "
                    f"project or re-encode the condition to {expected} features."
                )

    # -- the call ---------------------------------------------------------------------------------------------
    def noise_level(self, t) -> NoiseLevel:
        return prediction.noise_level(self.scheduler, t)

    def model_input(self, x: torch.Tensor, t) -> torch.Tensor:
        """What the backbone sees: the variance-exploding schedulers' 1/sqrt(1+sigma^2) input scaling."""
        if self.family != "ve":
            return x
        # Computed here, not by scheduler.scale_model_input: that reads the scheduler's step index, which is
        # wrong when a transition evaluates states ahead of the current step.
        sigma = self.noise_level(t).sigma.to(torch.float32)
        if hasattr(self.scheduler, "is_scale_input_called"):
            self.scheduler.is_scale_input_called = True
        return x / ((sigma**2 + 1) ** 0.5)

    def forward(self, x: torch.Tensor, t, cond: Condition | None = None) -> torch.Tensor:
        """One raw backbone call on the (already scaled) model input; learned-sigma channels kept."""
        kwargs = {**self.backbone.defaults(self.config), **(cond or {})}
        timestep = torch.as_tensor(t, device=x.device)
        if self.backbone.expand_timestep:
            timestep = timestep.reshape(1).expand(x.shape[0])
        return self.model(x, timestep=timestep, **kwargs, return_dict=False)[0]

    def __call__(
        self,
        x: torch.Tensor,
        t,
        cond: Condition | None = None,
        uncond: Condition | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
    ) -> DenoiserOutput:
        batch = x.shape[0]
        guided = uncond is not None and guidance_scale > 1
        x_in = self.model_input(x, t)
        if guided:
            raw = self.forward(torch.cat([x_in, x_in]), t, _stack_branches(uncond, cond or {}, batch))
        else:
            raw = self.forward(x_in, t, cond)
        channels = self.in_channels
        eps, variance = (raw[:, :channels], raw[:, channels:]) if self.learns_variance else (raw, None)
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            if guidance_rescale > 0:
                eps = rescale_noise_cfg(eps, eps_cond, guidance_rescale=guidance_rescale)
            variance = variance.chunk(2)[1] if variance is not None else None
        keep_variance = variance is not None and self.scheduler.config.get("variance_type") in ("learned", "learned_range")
        output = torch.cat([eps, variance], dim=1) if keep_variance else eps
        return DenoiserOutput(output=output, evaluations=batch * (2 if guided else 1), x0_fn=lambda: self.x0(x, eps, t))

    def x0(self, x: torch.Tensor, output: torch.Tensor, t) -> torch.Tensor:
        """The clean-sample estimate, clipped as the scheduler's own step would clip it."""
        x0 = prediction.to_x0(output[:, : self.in_channels], x, self.noise_level(t), self.prediction_type)
        config = self.scheduler.config
        if config.get("clip_sample", False):
            limit = config.get("clip_sample_range", 1.0)
            x0 = x0.clamp(-limit, limit)
        boundary = getattr(self.scheduler, "get_scalings_for_boundary_condition_discrete", None)
        if boundary is not None:  # consistency models (LCM, TCD): the scheduler's own denoised estimate
            c_skip, c_out = boundary(torch.as_tensor(t, dtype=torch.float32).cpu())
            x0 = c_out.to(x.dtype) * x0 + c_skip.to(x.dtype) * x
        return x0

    def __repr__(self) -> str:
        return (
            f"Denoiser({type(self.model).__name__}, {type(self.scheduler).__name__}, "
            f"prediction_type={self.prediction_type!r})"
        )
