"""What a model output means: conversions between prediction types at a noise level (the levels themselves
are `gen.core.schedulers`' business), the model's input, and the x0 estimate as a scheduler's step forms it.

With ``n = sqrt(alpha^2 + sigma^2)`` the model always sees the variance-preserving input ``x / n``, so one set
of formulas serves all three: ``v = (alpha * eps - sigma * x0) / n`` and ``flow = eps - x0``.
"""

from __future__ import annotations

import torch

from gen.core.schedulers import PREDICTION_TYPES, NoiseLevel, noise_level, schedule_family
from gen.errors import ArgumentError


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
