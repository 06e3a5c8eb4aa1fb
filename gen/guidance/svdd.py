"""SVDD: soft value-based decoding (Li et al. 2024), as a transition hook.

At every step, draw M candidates x_{t-1} from the model's own stochastic transition (one batched
scheduler step), score each with a value, and keep the best (alpha = 0) or sample one with probability
proportional to exp(v / alpha). No gradient is taken: rewards may be non-differentiable.

Cost, per sample and step: SVDD-PM evaluates the model at each of the M candidates (in one batched call,
chunked by max_batch) to get their x0 estimates, and the chosen candidate's evaluation is reused as the
next step's model output, so a run costs 1 + M * (steps - 1) model evaluations (the last step's candidates
are final samples, scored directly) against `steps` for plain sampling. A step that draws no noise (the
last step of DDPM and of DDIM) gives M copies of one point; SVDD takes it as the plain step, unscored, so
reward calls are M * (steps - 1) there. SVDD-MC scores candidates with a
value network and costs one model evaluation per step plus M value-network calls.

Deterministic transitions (DDIM with eta = 0, flow-matching Euler) give M identical candidates: SVDD
refuses them with an error naming the fix (eta=1.0, as the paper's image runs use, or
FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)) rather than silently changing the sampler.

    >>> value = PosteriorMeanValue(classifier_log_prob(classifier, target=3))
    >>> pipe(class_labels=None, batch_size=8, eta=1.0, hooks=[SVDD(value, num_candidates=4)])
"""

from __future__ import annotations

import torch

from gen.errors import ArgumentError, ArgumentTypeError, require_int, require_number
from gen.core.hooks import SamplingHook
from gen.core.schedulers import can_branch, is_stochastic, stochastic_alternative


def check_stochastic(run, who: str) -> None:
    """A clear error, before sampling, when the scheduler's step draws no noise (or cannot branch)."""
    scheduler = run.scheduler
    name = type(scheduler).__name__
    if not is_stochastic(scheduler, run.eta):
        fix = stochastic_alternative(scheduler)
        raise ArgumentError(f"scheduler: {who} needs a stochastic transition to draw distinct candidates, but {name} (eta={run.eta}) is deterministic; {fix}.")
    if not can_branch(scheduler):
        raise ArgumentError(
            f"scheduler: {name} keeps a history of past outputs, which candidates would pollute; use a single-step "
            f"scheduler (DDPM, DDIM, Euler ancestral, FlowMatchEuler) for {who}."
        )


def select(values: torch.Tensor, num_candidates: int, batch: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Row index (into the candidate-major layout) of the chosen candidate for each sample."""
    scores = values.reshape(num_candidates, batch)
    if alpha == 0:
        chosen = scores.argmax(dim=0)
    else:
        probs = torch.softmax(scores / alpha, dim=0).T
        chosen = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return chosen * batch + torch.arange(batch)


class SVDD(SamplingHook):
    """Value-guided transition: M candidates per step, keep the best (alpha=0) or sample ~ exp(v/alpha).

    Args:
        value: `PosteriorMeanValue` (SVDD-PM) or `LearnedValue` (SVDD-MC).
        num_candidates: M >= 1. M = 1 with alpha = 0 is plain sampling, exactly.
        alpha: temperature >= 0; 0 takes the arg-max (the paper's image setting).
        max_batch: cap on rows per backbone call (memory); candidates are evaluated in chunks.
        seed: mixed into the run's seed for soft selection (alpha > 0): the same pipeline seed gives the same
            selection every run.
    """

    def __init__(self, value, num_candidates: int = 4, alpha: float = 0.0, max_batch: int | None = None, seed: int = 0):
        if not hasattr(value, "score"):
            raise ArgumentTypeError(
                f"value: expected a PosteriorMeanValue or LearnedValue, got {type(value).__name__}; wrap a reward as PosteriorMeanValue(reward)."
            )
        require_int(num_candidates, "num_candidates", minimum=1)
        require_number(alpha, "alpha", minimum=0)
        require_int(max_batch, "max_batch", minimum=1, optional=True)
        require_int(seed, "seed", minimum=0)
        self.value, self.num_candidates, self.alpha, self.max_batch, self.seed = value, num_candidates, float(alpha), max_batch, seed
        self.generator = None

    def validate(self, run) -> None:
        check_stochastic(run, "SVDD")
        check_candidate_memory(run, self.num_candidates, self.max_batch)
        if getattr(self.value, "needs_prediction", False) and not getattr(self.value, "latent_reward", False) and not run.has_decoder:
            raise ArgumentError(
                "value: PosteriorMeanValue decodes x0 estimates but the run has no decoder; sample through a gen pipeline or steer(), or pass decode= to sample()."
            )

    def setup(self, run) -> None:
        self.generator = run.hook_generator(self.seed)

    def transition(self, state, ctx):
        m, batch = self.num_candidates, ctx.batch_size
        candidates = ctx.propose(state, m)
        if m > 1 and bool((candidates.reshape(m, batch, -1) == candidates[:batch].reshape(1, batch, -1)).all()):
            # a step that draws no noise (DDPM's and DDIM's last step) gives M copies of one point: nothing to choose
            return ctx.next_state(candidates[:batch])
        prediction, reusable = None, False
        if ctx.is_last:
            x0 = candidates
        elif self.value.needs_prediction:
            prediction, reusable = ctx.predict_next(candidates, self.max_batch)
            x0 = prediction.x0
        else:
            x0 = None
        step = None if ctx.is_last else state.step.index
        values = self.value.score(candidates, x0, ctx.next_timestep, ctx, step)
        rows = select(values, m, batch, self.alpha, self.generator)
        chosen = prediction.select(rows) if reusable else None
        return ctx.next_state(candidates[rows], chosen)

    def __repr__(self) -> str:
        return f"SVDD({type(self.value).__name__}, num_candidates={self.num_candidates}, alpha={self.alpha})"


def check_candidate_memory(run, num_candidates: int, max_batch: int | None) -> None:
    """Refuse, before any model call, M candidates whose states alone (candidates, their noise, predictions
    and x0 estimates: about 4 copies of M x the latents) would take more than half the free memory."""
    from gen.core.tiling import free_memory

    if not run.latent_shape:
        return
    rows = num_candidates * run.latent_shape[0]
    per_row = torch.finfo(run.latent_dtype).bits // 8
    for size in run.latent_shape[1:]:
        per_row *= size
    need = 4 * rows * per_row
    device = run.denoiser.model.device if hasattr(run.denoiser.model, "device") else torch.device("cpu")
    free = free_memory(torch.device(device))
    if need > free // 2:
        fit = max(1, int(free // 2 // (4 * per_row * run.latent_shape[0])))
        raise ArgumentError(
            f"num_candidates: {num_candidates} candidates of {tuple(run.latent_shape)} latents need about {need / 2**30:.1f} GiB, more than half "
            f"the {free / 2**30:.1f} GiB free; use at most about {fit} (max_batch only chunks the model calls, not the candidates)."
        )
