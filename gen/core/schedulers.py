"""What gen knows about diffusers schedulers, in one place: the noise level at a timestep and the family of
the state (variance preserving, exploding, flow), what prediction a scheduler's step consumes, whether its step
draws noise (and what the stochastic alternative is), whether several candidates can be stepped from one state,
and what its step takes.

Every scheduler gen supports writes the state as ``x_t = alpha * x0 + sigma * eps``:

- ``vp`` (DDPM, DDIM, DPM-Solver, UniPC, LCM, ...): ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)``.
- ``ve`` (Euler, Heun, LMS, ...): ``alpha = 1``, ``sigma = sigma_t``; the model sees ``x / sqrt(1 + sigma^2)``.
- ``flow`` (FlowMatchEuler, SD3, Flux, ...): ``alpha = 1 - sigma``, ``sigma = t / num_train_timesteps``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch

from gen.errors import ArgumentError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")

_VE_SCHEDULERS = {
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSDEScheduler",
}
_FLOW_SCHEDULERS = {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}
# Prediction types each family's stock `step()` knows how to consume.
_SERVED = {
    "vp": ("epsilon", "v_prediction", "sample"),
    "ve": ("epsilon", "v_prediction", "sample"),
    "flow": ("flow",),
}


@dataclass(frozen=True)
class NoiseLevel:
    """``x_t = alpha * x0 + sigma * eps`` at one timestep (0-d float64 tensors)."""

    alpha: torch.Tensor
    sigma: torch.Tensor

    @property
    def norm(self) -> torch.Tensor:
        return (self.alpha**2 + self.sigma**2).sqrt()

    @property
    def log_snr(self) -> torch.Tensor:
        return (self.alpha / self.sigma).log() if self.sigma > 0 else torch.tensor(float("inf"), dtype=torch.float64)


def schedule_family(scheduler) -> str:
    """``"vp"``, ``"ve"`` or ``"flow"``; a ValueError for schedulers gen does not model."""
    name = type(scheduler).__name__
    config = scheduler.config
    if name in _FLOW_SCHEDULERS or config.get("use_flow_sigmas", False) or config.get("prediction_type") == "flow_prediction":
        return "flow"
    if name in _VE_SCHEDULERS:
        return "ve"
    if hasattr(scheduler, "alphas_cumprod"):
        return "vp"
    raise ArgumentError(
        f"scheduler: {name} is not supported by gen (its noise parametrization is unknown). Use a DDPM/DDIM/"
        "DPM-Solver/UniPC/LCM (variance preserving), Euler/Heun/LMS (variance exploding) or FlowMatchEuler scheduler."
    )


def scheduler_prediction_type(scheduler) -> str:
    """The prediction type the scheduler's `step()` expects, in gen's names."""
    family = schedule_family(scheduler)
    if family == "flow":
        return "flow"
    declared = scheduler.config.get("prediction_type", "epsilon")
    return "sample" if declared == "original_sample" else declared


def served_prediction_types(scheduler) -> tuple[str, ...]:
    return _SERVED[schedule_family(scheduler)]


def _interp(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a per-train-timestep table at a (possibly fractional) timestep."""
    t = t.double().clamp(0, len(table) - 1)
    low = t.floor().long()
    high = (low + 1).clamp(max=len(table) - 1)
    w = t - low
    return table[low] * (1 - w) + table[high] * w


def _lookup_scheduler_sigma(scheduler, t: torch.Tensor) -> torch.Tensor | None:
    """The scheduler's own sigma for t when t is on its current grid (exact for Karras/shifted grids)."""
    timesteps = getattr(scheduler, "timesteps", None)
    sigmas = getattr(scheduler, "sigmas", None)
    if timesteps is None or sigmas is None or len(sigmas) < len(timesteps):
        return None
    hits = (timesteps.to(t.device).double() == t.double()).nonzero()
    if len(hits) == 0:
        return None
    return sigmas[hits[0, 0]].double().cpu()


def noise_level(scheduler, timestep) -> NoiseLevel:
    """The scheduler's (alpha, sigma) at a timestep, in float64 on the CPU."""
    family = schedule_family(scheduler)
    t = torch.as_tensor(timestep).detach().double().cpu().reshape(())
    if family == "flow":
        sigma = None
        if type(scheduler).__name__ not in _FLOW_SCHEDULERS:  # flow sigmas inside a VP solver (DPM-Solver)
            sigma = _lookup_scheduler_sigma(scheduler, t)
        if sigma is None:
            sigma = t / scheduler.config.num_train_timesteps
        return NoiseLevel(alpha=1 - sigma, sigma=sigma)
    abar = scheduler.alphas_cumprod.double().cpu()
    if family == "ve":
        sigma = _lookup_scheduler_sigma(scheduler, t)
        if sigma is None:
            sigma = _interp(((1 - abar) / abar).sqrt(), t)
        return NoiseLevel(alpha=torch.ones((), dtype=torch.float64), sigma=sigma)
    a = _interp(abar, t)
    return NoiseLevel(alpha=a.sqrt(), sigma=(1 - a).sqrt())


STOCHASTIC_SCHEDULERS = {
    "DDPMScheduler",
    "EulerAncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSDEScheduler",
    "LCMScheduler",
}
# Schedulers whose step() carries a history of past outputs: candidates would pollute it.
_MULTISTEP_ATTRIBUTE = "model_outputs"


def is_stochastic(scheduler, eta: float | None) -> bool:
    """Whether scheduler.step draws fresh noise: the only source of distinct candidates."""
    name = type(scheduler).__name__
    config = scheduler.config
    if name == "DDIMScheduler":
        return bool(eta)
    if name == "FlowMatchEulerDiscreteScheduler":
        return bool(config.get("stochastic_sampling", False))
    if name == "DPMSolverMultistepScheduler":
        return config.get("algorithm_type", "").startswith("sde")
    if name == "TCDScheduler":
        return bool(eta if eta is not None else 0.3)
    return name in STOCHASTIC_SCHEDULERS


def can_branch(scheduler) -> bool:
    """Whether several candidates may be stepped from one state in one batched `step()` call."""
    order = getattr(scheduler, "config", {}).get("solver_order", 1)
    return not (hasattr(scheduler, _MULTISTEP_ATTRIBUTE) and order > 1) and getattr(scheduler, "order", 1) == 1


@functools.lru_cache(maxsize=None)
def step_parameters(scheduler_class: type) -> frozenset:
    return frozenset(inspect.signature(scheduler_class.step).parameters)


def step_kwargs(scheduler, generator, eta, extra: dict | None = None) -> dict:
    """What the stock pipelines pass to step(): eta and generator where step() takes them, and any
    scheduler-specific extras (DDIM's use_clipped_model_output)."""
    accepted = step_parameters(type(scheduler))
    kwargs = {k: v for k, v in (extra or {}).items() if k in accepted}
    if "generator" in accepted:
        kwargs["generator"] = generator
    if "eta" in accepted and eta is not None:
        kwargs["eta"] = eta
    return kwargs


def train_log_snr(scheduler) -> torch.Tensor:
    """log(alpha/sigma) at every training timestep of a scheduler."""
    n = scheduler.config.num_train_timesteps
    if schedule_family(scheduler) == "flow":
        sigma = torch.arange(n, dtype=torch.float64).clamp(min=0.5) / n
        return ((1 - sigma) / sigma).log()
    abar = scheduler.alphas_cumprod.double().cpu()
    return 0.5 * (abar / (1 - abar)).log()


# The stochastic variant to name when a method needs a step that draws noise (value guidance's candidates).
_STOCHASTIC_ALTERNATIVE = {
    "DDIMScheduler": "pass eta=1.0 (the SVDD paper's setting) or any eta > 0",
    "FlowMatchEulerDiscreteScheduler": "use FlowMatchEulerDiscreteScheduler.from_config(config, stochastic_sampling=True)",
    "EulerDiscreteScheduler": "use EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config) (SDXL's default sampler is deterministic Euler)",
}


def stochastic_alternative(scheduler) -> str:
    """How to make this scheduler's step draw noise, in words a user can act on."""
    return _STOCHASTIC_ALTERNATIVE.get(type(scheduler).__name__, "use a stochastic scheduler (DDPM, DDIM with eta > 0, Euler ancestral, SDE DPM-Solver)")
