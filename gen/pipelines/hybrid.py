"""Diversity distillation (Gandikota & Bau 2025): the base model for the first step(s), the distilled
model after.

Distilled few-step models keep the base model's concepts but lose diversity, and the first timestep
decides most of it. Two ways to hand over, both in `HybridDistilledPipeline(handover=...)`:

- ``"first-steps"`` (default; the paper's): the run follows the distilled model's own few-step grid and
  scheduler; the base model takes the first k steps (from pure noise at the top of the schedule), the
  distilled model the rest, from its second timestep when k = 1 (`BaseFirstHook`). The base steps are
  deterministic DDIM updates to the grid's next timestep, so the layout the base model decides carries
  over (a consistency scheduler's own step would re-noise the blurry first x0 estimate with fresh noise and
  lose it: measured, that made the hybrid *less* diverse than the distilled model on the zoo's digits).
  Cost: k base evaluations (guided) plus the remaining distilled steps.
- ``"noise-level"``: the base model runs the first k steps of *its* scheduler, then the state continues on
  the distilled scheduler (`HybridHook`), for base schedules finer than the distilled grid.

Handover by noise level (``"noise-level"``, `HybridHook`): the state after k base steps sits at the base scheduler's noise level for
timestep t_k. The distilled scheduler continues from its grid point of the same log-SNR if one is within
0.05 (else from the training timestep of nearest log-SNR, prepended to its grid for schedulers that take
custom timesteps), keeping only its grid points below that level; the state is rescaled by the ratio of
the two schedules' signal coefficients (1 when both are variance preserving over the same betas). Cost: k
base evaluations plus the distilled steps left after the handover.

    >>> hybrid = HybridDistilledPipeline(zoo.load("digits"), zoo.load("digits-distilled"), base_steps=1)
    >>> out = hybrid(class_labels=[3] * 8, distilled_steps=4, guidance_scale=2.0)   # base at t=999, distilled 759, 499, 259

The `HybridHook` behind it works with any pair of pipelines through `steer`:

    >>> steer(base_pipe)(prompt, num_inference_steps=50,
    ...                  hooks=[HybridHook(Denoiser(fast.unet, fast.scheduler), base_steps=1, distilled_steps=4)])
"""

from __future__ import annotations

import torch

from gen.errors import ArgumentError, ArgumentTypeError
from gen.core import prediction
from gen.core.denoiser import Denoiser, Unguided
from gen.core.hooks import SamplingHook
from gen.core.sampling import plan_handover
from gen.pipelines.composite import CompositePipeline


class BaseFirstHook(SamplingHook):
    """Denoiser and transition hook for a run on the distilled model: the base model takes the first
    `base_steps` steps of the run's grid (deterministic DDIM updates from its predictions), the distilled
    model the rest with the run's own scheduler.

    Args:
        base: the base backbone (any model gen.Denoiser takes; it must predict what the run's scheduler
            consumes, e.g. epsilon).
        base_steps: k >= 1.
        unguided_after: evaluate the distilled steps without the unconditional branch (distilled models with
            guidance baked in), while the base steps take the run's guidance.

        >>> steer(turbo_pipe)(prompt, num_inference_steps=4, hooks=[BaseFirstHook(base_pipe.unet, base_steps=1)])
    """

    def __init__(self, base, base_steps: int = 1, unguided_after: bool = False):
        if isinstance(base_steps, bool) or not isinstance(base_steps, int) or base_steps < 1:
            raise ArgumentError(f"base_steps: must be an integer >= 1, got {base_steps!r}.")
        self.base, self.base_steps, self.unguided_after = base, base_steps, unguided_after
        self._base_denoiser = None

    def validate(self, run) -> None:
        denoiser = Denoiser(self.base, run.scheduler)
        if denoiser.in_channels != run.denoiser.in_channels:
            raise ArgumentError(
                f"base: latent channels differ (base {denoiser.in_channels}, distilled {run.denoiser.in_channels}); the two models must share a latent space."
            )
        if self.base_steps >= len(run.timesteps):
            raise ArgumentError(f"base_steps: {self.base_steps} must be smaller than the run's {len(run.timesteps)} steps, or the distilled model never runs.")
        self._base_denoiser = denoiser

    def denoiser(self, step, current: Denoiser) -> Denoiser:
        if step.index < self.base_steps:
            return self._base_denoiser
        return Unguided(current) if self.unguided_after else current

    def transition(self, state, ctx):
        """A base step: the deterministic DDIM update from this timestep to the grid's next one."""
        if state.step.index >= self.base_steps:
            return ctx.proceed(state)
        den = ctx.denoiser
        here, there = den.noise_level(state.step.timestep), den.noise_level(ctx.next_timestep)
        x0 = prediction.to_x0(den.prediction_of(state.model_output), state.x, here, den.prediction_type)
        eps = (state.x - here.alpha.to(x0.dtype) * x0) / here.sigma.to(x0.dtype)
        return ctx.next_state(there.alpha.to(x0.dtype) * x0 + there.sigma.to(x0.dtype) * eps)

    def __repr__(self) -> str:
        return f"BaseFirstHook(base_steps={self.base_steps}, unguided_after={self.unguided_after})"


class HybridHook(SamplingHook):
    """Denoiser hook: the run's own denoiser for steps < base_steps, `distilled` from then on.

    Args:
        distilled: the distilled model's Denoiser (its scheduler defines its grid).
        base_steps: k >= 1, the base steps taken before the handover.
        distilled_steps: the distilled scheduler's number of steps (its grid before the handover trims it).

    The distilled denoiser is called like the base one (with the run's guidance); wrap it if it should
    run unguided, as `HybridDistilledPipeline` does for models with guidance distilled in.
    """

    def __init__(self, distilled: Denoiser, base_steps: int = 1, distilled_steps: int = 4):
        if not isinstance(distilled, Denoiser):
            raise ArgumentTypeError(f"distilled: expected a gen.Denoiser, got {type(distilled).__name__}; wrap it: Denoiser(model, scheduler).")
        if isinstance(base_steps, bool) or not isinstance(base_steps, int) or base_steps < 1:
            raise ArgumentError(f"base_steps: must be an integer >= 1, got {base_steps!r}.")
        if not isinstance(distilled_steps, int) or distilled_steps < 1:
            raise ArgumentError(f"distilled_steps: must be an integer >= 1, got {distilled_steps!r}.")
        self.distilled, self.base_steps, self.distilled_steps = distilled, base_steps, distilled_steps

    def validate(self, run) -> None:
        base = run.denoiser
        if base.in_channels != self.distilled.in_channels:
            raise ArgumentError(
                f"distilled: latent channels differ (base {base.in_channels}, distilled {self.distilled.in_channels}); the two models must share a latent space."
            )
        base_size, distilled_size = base.config.get("sample_size"), self.distilled.config.get("sample_size")
        if base_size != distilled_size:
            raise ArgumentError(f"distilled: sample sizes differ (base {base_size}, distilled {distilled_size}); the two models must share a latent space.")
        if self.base_steps >= len(run.timesteps):
            raise ArgumentError(
                f"base_steps: {self.base_steps} must be smaller than the base schedule's {len(run.timesteps)} steps, or the distilled model never runs."
            )
        if self.distilled.scheduler is run.scheduler:
            raise ArgumentError("distilled: give the distilled denoiser its own scheduler instance (it is re-planned at the handover).")
        try:
            self.distilled.scheduler.set_timesteps(self.distilled_steps)
        except ValueError as err:
            raise ArgumentError(f"distilled_steps: the distilled scheduler cannot take {self.distilled_steps} steps: {err}") from None
        plan_handover(base.noise_level(run.timesteps[self.base_steps]), self.distilled.scheduler, self.base_steps)

    def denoiser(self, step, current: Denoiser) -> Denoiser:
        return self.distilled if step.index >= self.base_steps else current

    def __repr__(self) -> str:
        return f"HybridHook(base_steps={self.base_steps}, distilled_steps={self.distilled_steps})"


class HybridDistilledPipeline(CompositePipeline):
    """Base pipeline for the first `base_steps` steps, distilled model after (see the module docstring).

    `base` and `distilled` are gen pipelines over the same latent space (e.g. `ClassConditionalPipeline`);
    the call takes the base pipeline's arguments plus `base_steps` and `distilled_steps`. With
    guidance_scale > 1 the base steps are guided and the distilled steps are not: distilled models carry
    their guidance baked in (as `gen.training.distill` makes them).
    """

    HANDOVERS = ("first-steps", "noise-level")

    def __init__(self, base, distilled, base_steps: int = 1, distilled_steps: int = 4, handover: str = "first-steps"):
        super().__init__()
        _check_pair(base, distilled)
        _check_handover(handover)
        self.register_modules(base=base, distilled=distilled)
        self.register_to_config(base_steps=base_steps, distilled_steps=distilled_steps, handover=handover)

    @torch.no_grad()
    def __call__(self, *args, base_steps: int | None = None, distilled_steps: int | None = None, handover: str | None = None, hooks=(), **kwargs):
        """The base pipeline's call arguments; NFE counts base and distilled evaluations together.

        handover="first-steps" (the default, the paper's): the run follows the distilled model's
        `distilled_steps`-step grid and scheduler, the base model predicting for the first `base_steps`
        steps (guided when guidance_scale > 1), the distilled model (unguided: its guidance is baked in)
        for the rest. handover="noise-level": the base pipeline runs its own scheduler for
        num_inference_steps (default distilled_steps) steps and hands over after `base_steps` of them."""
        k = self.config.base_steps if base_steps is None else base_steps
        n = self.config.distilled_steps if distilled_steps is None else distilled_steps
        mode = self.config.handover if handover is None else handover
        _check_handover(mode)
        try:
            return self._run(args, k, n, mode, hooks, kwargs)
        finally:
            self.maybe_free_model_hooks()

    def _run(self, args, k: int, n: int, mode: str, hooks, kwargs):
        guided = kwargs.get("guidance_scale", 1.0) > 1
        if mode == "first-steps":
            if kwargs.get("num_inference_steps", n) != n:
                raise ArgumentError("num_inference_steps: with handover='first-steps' the run follows the distilled grid; set distilled_steps instead.")
            kwargs["num_inference_steps"] = n
            return self.distilled(*args, hooks=[BaseFirstHook(self.base.backbone, k, unguided_after=guided), *list(hooks)], **kwargs)
        kwargs.setdefault("num_inference_steps", n)
        distilled = Denoiser(self.distilled.backbone, self.distilled.scheduler)
        hook = _UnguidedAfterHandover(distilled, k, n) if guided else HybridHook(distilled, k, n)
        return self.base(*args, hooks=[hook, *list(hooks)], **kwargs)


def _check_handover(handover) -> None:
    if handover not in HybridDistilledPipeline.HANDOVERS:
        raise ArgumentError(f"handover: one of {HybridDistilledPipeline.HANDOVERS}, got {handover!r}.")


class _UnguidedAfterHandover(HybridHook):
    """The distilled model has guidance baked in: after the handover, evaluate it without the uncond branch."""

    def denoiser(self, step, current):
        if step.index < self.base_steps:
            return current
        return Unguided(self.distilled)


def _check_pair(base, distilled) -> None:
    for name, pipe in (("base", base), ("distilled", distilled)):
        if not hasattr(pipe, "backbone") or not hasattr(pipe, "scheduler"):
            raise ArgumentTypeError(
                f"{name}: expected a gen pipeline (with a backbone and a scheduler), got {type(pipe).__name__}; for stock diffusers pipelines use steer(base)(..., hooks=[HybridHook(...)])."
            )
    a, b = base.backbone.config, distilled.backbone.config
    if a.in_channels != b.in_channels or a.sample_size != b.sample_size:
        raise ArgumentError(
            f"distilled: latent shapes differ (base {a.in_channels}x{a.sample_size}, distilled {b.in_channels}x{b.sample_size}); the models must share a latent space."
        )
    vae_a, vae_b = getattr(base, "vae", None), getattr(distilled, "vae", None)
    if (vae_a is None) != (vae_b is None) or (vae_a is not None and vae_a.config.latent_channels != vae_b.config.latent_channels):
        raise ArgumentError("distilled: one model is latent and the other is not (or their VAEs differ); the models must share a latent space.")
    if base.scheduler is distilled.scheduler:
        raise ArgumentError("distilled: the two pipelines share one scheduler object; give the distilled pipeline its own.")
