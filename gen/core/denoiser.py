"""`Denoiser`: a backbone with the scheduler that gives its outputs meaning.

The `Backbone` adapter (gen.core.backbones) calls the model; the scheduler fixes the noise levels and what
the model predicts (gen.core.prediction). A Denoiser combines the two with classifier-free guidance and
answers the guided model output together with its clean-sample (x0) estimate:

    >>> den = Denoiser(unet, scheduler)
    >>> out = den(x, t, cond={"encoder_hidden_states": text}, uncond={"encoder_hidden_states": null},
    ...           guidance_scale=7.5)
    >>> out.output, out.x0
"""

from __future__ import annotations

import torch

from gen.errors import ArgumentError, ArgumentTypeError
from gen.core import prediction, schedulers
from gen.core.backbones import Backbone, Condition, stack_branches
from gen.core.schedulers import NoiseLevel


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


def guidance_combine(uncond: torch.Tensor, cond: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond), then diffusers' guidance rescale (Lin et al. 2023) when rescale > 0."""
    guided = uncond + scale * (cond - uncond)
    if rescale <= 0:
        return guided
    # imported here: the Stable Diffusion pipeline module pulls in transformers, which `import gen` must not
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    return rescale_noise_cfg(guided, cond, guidance_rescale=rescale)


def renormalised_combine(uncond: torch.Tensor, cond: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """CFG rescaled, along the last dimension, to the conditional prediction's norm (Lumina 2's cfg_normalization,
    Qwen-Image's true CFG): the rule as those stock loops apply it."""
    guided = uncond + scale * (cond - uncond)
    return guided * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(guided, dim=-1, keepdim=True))


class Denoiser:
    """A diffusers backbone with its scheduler: ``den(x, t, cond, uncond, guidance_scale)`` -> guided output + x0.

    Args:
        model: UNet2DModel, UNet2DConditionModel (SD, SDXL), DiTTransformer2DModel, PixArtTransformer2DModel,
            SD3Transformer2DModel, FluxTransformer2DModel (packed latents) or SanaTransformer2DModel
            (LoRA-adapted or `torch.compile`d ones too).
        scheduler: any diffusers scheduler gen models (see `gen.core.prediction`); it sets the noise levels and
            what the model predicts.
        prediction_type: optional assertion of what the model predicts (``"epsilon"``, ``"v_prediction"``,
            ``"sample"``, ``"flow"``); it must be what the scheduler is configured to consume.
        separate_branches: evaluate the conditional and unconditional branches in two calls, conditional
            first, as Flux's and Qwen-Image's "true CFG" loops do (default: one call over [uncond; cond]).
        guidance_rule: ``(uncond, cond, scale, rescale) -> guided``, for families whose stock loop combines the
            branches otherwise (Lumina 2's and Qwen-Image's renormalisation); default `guidance_combine`.
    """

    def __init__(self, model, scheduler, prediction_type: str | None = None, separate_branches: bool = False, guidance_rule=None):
        if isinstance(scheduler, type) or not (hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "step") and hasattr(scheduler, "config")):
            what = f"the class {scheduler.__name__}" if isinstance(scheduler, type) else f"{type(scheduler).__name__} {scheduler!r}"[:80]
            raise ArgumentTypeError(
                f"scheduler: expected a diffusers scheduler object, got {what}; build one, e.g. " "DDIMScheduler.from_config(pipe.scheduler.config)."
            )
        self.model = model
        self.separate_branches = separate_branches
        self.guidance_rule = guidance_rule
        self.backbone = Backbone(model)
        self.scheduler = scheduler
        served = schedulers.scheduler_prediction_type(scheduler)
        if prediction_type is not None and prediction_type != served:
            allowed = schedulers.served_prediction_types(scheduler)
            fix = (
                f"{type(scheduler).__name__}.from_config(scheduler.config, prediction_type={prediction_type!r})"
                if prediction_type in allowed
                else f"a scheduler that consumes {prediction_type!r} predictions"
            )
            raise ArgumentError(
                f"prediction_type: the model predicts {prediction_type!r} but {type(scheduler).__name__} is "
                f"configured for {served!r} (it can serve {allowed}). Pass scheduler={fix}."
            )
        if served not in schedulers.PREDICTION_TYPES:
            raise ArgumentError(
                f"scheduler: prediction_type {served!r} in {type(scheduler).__name__}'s config is not one of "
                f"{schedulers.PREDICTION_TYPES}; set it with from_config(..., prediction_type=...)."
            )
        self.prediction_type = served
        self.family = schedulers.schedule_family(scheduler)

    @property
    def config(self):
        return self.model.config

    @property
    def in_channels(self) -> int:
        return self.backbone.in_channels

    @property
    def learns_variance(self) -> bool:
        return self.backbone.learns_variance

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def with_scheduler(self, scheduler) -> "Denoiser":
        """The same backbone over another scheduler (e.g. a stochastic one for value guidance)."""
        return Denoiser(self.model, scheduler, separate_branches=self.separate_branches, guidance_rule=self.guidance_rule)

    def check_latents(self, x, name: str = "latents") -> None:
        self.backbone.check_latents(x, name)

    def check_condition(self, cond: Condition | None, batch: int, name: str = "cond") -> None:
        self.backbone.check_condition(cond, batch, name)

    def noise_level(self, t) -> NoiseLevel:
        return schedulers.noise_level(self.scheduler, t)

    def forward(self, x: torch.Tensor, t, cond: Condition | None = None) -> torch.Tensor:
        """One raw backbone call on the (already scaled) model input; learned-sigma channels kept."""
        return self.backbone(x, t, cond, self.scheduler)

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
        # guidance is on above scale 1 (CFG), or above the rule's own threshold (Z-Image guides from 0)
        guided = uncond is not None and guidance_scale > getattr(self.guidance_rule, "guides_above", 1)
        eps_uncond, eps_cond, variance = self.branches(x, t, cond, uncond if guided else None)
        eps = (self.guidance_rule or guidance_combine)(eps_uncond, eps_cond, guidance_scale, guidance_rescale) if guided else eps_cond
        keep_variance = variance is not None and self.scheduler.config.get("variance_type") in ("learned", "learned_range")
        output = torch.cat([eps, variance], dim=self.backbone.channel_dim) if keep_variance else eps
        return DenoiserOutput(output=output, evaluations=batch * (2 if guided else 1), x0_fn=lambda: self.x0(x, eps, t))

    def branches(self, x: torch.Tensor, t, cond: Condition | None, uncond: Condition | None):
        """(unconditional prediction or None, conditional prediction, learned variance of the conditional branch
        or None): one backbone call, over [uncond; cond] stacked in the stock pipeline's order when uncond is given."""
        x_in = prediction.model_input(self.scheduler, x, t)
        if uncond is None:
            eps, variance = self.backbone.split_variance(self.forward(x_in, t, cond))
            return None, eps, variance
        if self.separate_branches:
            eps_cond, variance = self.backbone.split_variance(self.forward(x_in, t, cond))
            return self.backbone.split_variance(self.forward(x_in, t, uncond))[0], eps_cond, variance
        cond_first = self.backbone.spec.conditional_first
        first, second = (cond or {}, uncond) if cond_first else (uncond, cond or {})
        eps, variance = self.backbone.split_variance(self.forward(torch.cat([x_in, x_in]), t, self._stacked(first, second, x.shape[0])))
        eps_uncond, eps_cond = eps.chunk(2)[::-1] if cond_first else eps.chunk(2)
        return eps_uncond, eps_cond, variance.chunk(2)[0 if cond_first else 1] if variance is not None else None

    def _stacked(self, first, second, batch: int):
        """The [first; second] condition, kept while the run passes the same values (the stock loops stack their
        prompt embeddings once, before the loop; a hook that replaces a value, even in place of the dict's
        entry, gets a new stack)."""
        leaves = _leaves(first) + _leaves(second)
        cached = self.__dict__.get("_stack_cache")
        if cached is not None and cached[0] == batch and len(cached[1]) == len(leaves) and all(a is b for a, b in zip(cached[1], leaves)):
            return cached[2]
        stacked = stack_branches(first, second, batch)
        self._stack_cache = (batch, leaves, stacked)
        return stacked

    def x0(self, x: torch.Tensor, output: torch.Tensor, t) -> torch.Tensor:
        """The clean-sample estimate, clipped as the scheduler's own step would clip it."""
        return prediction.clean_estimate(self.scheduler, self.prediction_of(output), x, t, self.prediction_type)

    def prediction_of(self, output: torch.Tensor) -> torch.Tensor:
        """The prediction channels of an output that may carry learned-variance channels after them."""
        return self.backbone.split_variance(output)[0] if output.shape[self.backbone.channel_dim] != self.in_channels else output

    def __repr__(self) -> str:
        return f"Denoiser({self.backbone.name}, {type(self.scheduler).__name__}, prediction_type={self.prediction_type!r})"


def _leaves(cond) -> list:
    """The values of a (nested) condition, in order, with their keys' places marked."""
    if isinstance(cond, dict):
        return [item for key, value in cond.items() for item in (key, *_leaves(value))]
    if isinstance(cond, (list, tuple)):
        return [type(cond), *[item for value in cond for item in _leaves(value)]]
    return [cond]


class Unguided(Denoiser):
    """The same denoiser evaluated without its unconditional branch, whatever the run asks (a model with
    guidance distilled in; a step outside a family's guidance window)."""

    def __init__(self, inner: Denoiser):
        self.__dict__.update(inner.__dict__)

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale=1.0, guidance_rescale=0.0):
        return Denoiser.__call__(self, x, t, cond=cond)
