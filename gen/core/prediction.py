"""What a model output means: the noise level of a scheduler at a timestep, and conversions between
prediction types.

Every scheduler gen supports writes the state as ``x_t = alpha * x0 + sigma * eps``:

- ``vp`` (DDPM, DDIM, DPM-Solver, UniPC, LCM, ...): ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)``.
- ``ve`` (Euler, Heun, LMS, ...): ``alpha = 1``, ``sigma = sigma_t``; the model sees ``x / sqrt(1 + sigma^2)``.
- ``flow`` (FlowMatchEuler, SD3): ``alpha = 1 - sigma``, ``sigma = t / num_train_timesteps``.

With ``n = sqrt(alpha^2 + sigma^2)`` the model always sees the variance-preserving input ``x / n``, so one set
of formulas serves all three: ``v = (alpha * eps - sigma * x0) / n`` and ``flow = eps - x0``.
"""

from __future__ import annotations

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


def to_x0(output: torch.Tensor, x: torch.Tensor, level: NoiseLevel, prediction_type: str) -> torch.Tensor:
    """The clean-sample (Tweedie) estimate from a model output at state x."""
    a, s = (v.to(x.dtype) for v in (level.alpha, level.sigma))
    if prediction_type == "epsilon":
        return (x - s * output) / a
    if prediction_type == "v_prediction":
        n = (a * a + s * s).sqrt()
        return a * x / (n * n) - s * output / n
    if prediction_type == "sample":
        return output
    if prediction_type == "flow":  # x = a*x0 + s*(v + x0); a + s = 1 on flow schedules
        return (x - s * output) / (a + s)
    raise ArgumentError(f"prediction_type: {prediction_type!r} is not one of {PREDICTION_TYPES}.")


def from_x0(x0: torch.Tensor, x: torch.Tensor, level: NoiseLevel, prediction_type: str) -> torch.Tensor:
    """The model output of the given type that has x0 as its clean-sample estimate at state x."""
    a, s = (v.to(x.dtype) for v in (level.alpha, level.sigma))
    if prediction_type == "sample":
        return x0
    eps = (x - a * x0) / s
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return (a * eps - s * x0) / (a * a + s * s).sqrt()
    if prediction_type == "flow":
        return eps - x0
    raise ArgumentError(f"prediction_type: {prediction_type!r} is not one of {PREDICTION_TYPES}.")


def convert(output: torch.Tensor, x: torch.Tensor, level: NoiseLevel, source: str, target: str) -> torch.Tensor:
    """Re-express a model output of type `source` as type `target` (same x0 estimate)."""
    if source == target:
        return output
    return from_x0(to_x0(output, x, level, source), x, level, target)


def model_input(scheduler, x: torch.Tensor, timestep) -> torch.Tensor:
    """What the backbone sees at x: the variance-exploding schedulers' x / sqrt(1 + sigma^2), else x.

    Computed here, not by `scheduler.scale_model_input`: that reads the scheduler's step index, which is
    wrong when a transition evaluates states ahead of the current step."""
    if schedule_family(scheduler) != "ve":
        return x
    sigma = noise_level(scheduler, timestep).sigma.to(torch.float32)
    if hasattr(scheduler, "is_scale_input_called"):
        scheduler.is_scale_input_called = True
    return x / ((sigma**2 + 1) ** 0.5)


def clean_estimate(scheduler, output: torch.Tensor, x: torch.Tensor, timestep, prediction_type: str) -> torch.Tensor:
    """The x0 estimate as the scheduler's own step() forms it: converted, clipped where its config clips,
    and through the consistency boundary scalings for consistency schedulers (LCM, TCD)."""
    x0 = to_x0(output, x, noise_level(scheduler, timestep), prediction_type)
    config = scheduler.config
    if config.get("clip_sample", False):
        limit = config.get("clip_sample_range", 1.0)
        x0 = x0.clamp(-limit, limit)
    boundary = getattr(scheduler, "get_scalings_for_boundary_condition_discrete", None)
    if boundary is not None:
        c_skip, c_out = boundary(torch.as_tensor(timestep, dtype=torch.float32).cpu())
        x0 = c_out.to(x.device, x.dtype) * x0 + c_skip.to(x.device, x.dtype) * x
    return x0
