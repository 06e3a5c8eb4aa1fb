"""`SamplingHook` and its four points.

A hook overrides any of:

- ``condition(step, cond) -> cond``: change the condition for one step (CADS).
- ``denoiser(step, current) -> Denoiser``: choose the backbone for one step (hybrid base/distilled). A
  denoiser with a scheduler of its own takes over the rest of the schedule (see `gen.core.sampling`).
- ``transition(state, ctx) -> state``: replace the step x_t -> x_{t-1} (value-guided search).
  ``ctx.proceed(state)`` runs the rest of the chain, ending in the scheduler's own step.
- ``observe(state)``: read the state before each step: x_t, the model output and the x0 estimate.

and may define ``validate(run)``, called once before any model evaluation, to reject a setup early, and
``setup(run)``, called at the start of every run, to reset per-run state. A hook that draws random numbers
takes its generator from ``run.hook_generator(salt)``, seeded from the run's own generator: the same hook
object with the same pipeline seed gives the same image every time.
Hooks compose in the order given: conditions and denoisers are threaded through them; the first
transition wraps the second, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from gen.errors import ArgumentTypeError
from gen.core.backbones import Condition
from gen.core.denoiser import Denoiser

# The loop (gen.core.sampling) imports this module, never the reverse: the state and context a
# transition receives are `gen.core.sampling.SamplingState` and `StepContext`, named here as strings.

HOOK_POINTS = ("condition", "denoiser", "transition", "observe")


@dataclass(frozen=True)
class Step:
    """Where the loop is: step `index` of `num_steps`, at `timestep`."""

    index: int
    timestep: torch.Tensor
    num_steps: int

    @property
    def progress(self) -> float:
        """Fraction of the steps already taken: 0 at the first (pure noise), towards 1 at the last."""
        return self.index / self.num_steps


class SamplingHook:
    """Base class for hooks; override the points you need. See the module docstring."""

    def condition(self, step: Step, cond: Condition) -> Condition:
        return cond

    def denoiser(self, step: Step, current: Denoiser) -> Denoiser:
        return current

    def transition(self, state: "SamplingState", ctx: "StepContext") -> "SamplingState":
        return ctx.proceed(state)

    def observe(self, state: "SamplingState") -> None:
        return None


def points_of(hook) -> tuple[str, ...]:
    """The hook points this object implements (overrides, for SamplingHook subclasses)."""
    found = []
    for point in HOOK_POINTS:
        method = getattr(type(hook), point, None)
        if method is None or not callable(method):
            continue
        if isinstance(hook, SamplingHook) and method is getattr(SamplingHook, point):
            continue
        found.append(point)
    return tuple(found)


def check_hooks(hooks, name: str = "hooks") -> list:
    """The hooks as a list (one hook, or any iterable of them: a list, a tuple, a generator); a TypeError
    naming the offending entry when one is a class rather than an instance or implements no point."""
    if hooks is None:
        return []
    if isinstance(hooks, (SamplingHook, type, str, bytes, dict)) or not isinstance(hooks, Iterable) or points_of(hooks):
        hooks = [hooks]
    hooks = list(hooks)
    for i, hook in enumerate(hooks):
        if isinstance(hook, type):
            raise ArgumentTypeError(f"{name}[{i}]: got the class {hook.__name__}, not a hook; pass an instance, e.g. {hook.__name__}(...).")
        if not points_of(hook):
            raise ArgumentTypeError(
                f"{name}[{i}]: {type(hook).__name__} implements none of the hook points {HOOK_POINTS}; subclass "
                "gen.SamplingHook and override at least one of them."
            )
    return hooks
