"""Population-based peers of SVDD, as transition hooks: best-of-N and FK steering.

Both carry N particles per sample through the loop (particle 0 of each sample is the loop's visible state,
started from the run's own initial noise; the others start from the hook's seeded noise). All N*B
particles step through one batched scheduler call and one batched model call per step, and each
particle's prediction is reused at the next step, so a run costs N model evaluations per sample per
step: the same budget as SVDD with M = N.

- `BestOfN(reward, n)`: independent samples; at the end keep the one with the highest reward.
- `FKSteering(reward, num_particles, potential, lmbda, resample_every, resample_window, ess_threshold)`
  (Singhal et al. 2025, "A general framework for inference-time scaling and steering of diffusion
  models"): at resampling steps the particles are scored with the reward r_t of their decoded x0 estimate
  and resampled (multinomially, within each sample) with weights exp(lmbda * potential), the potential
  being r_t itself ("rt"), the running max of the rewards ("max"), their running sum ("sum"), or the change
  since the previous resampling step ("difference"). As in the reference implementation: lmbda = 10,
  resampling every 20% of the steps inside the window [20%, 80%] of the schedule (every 20 steps within
  t in [20, 80] of 100), and adaptive resampling: only when the effective sample size falls below half the
  particles (ess_threshold=None resamples every time). At the end the particle with the highest reward is
  kept. Resampled particles are copies: a deterministic sampler would keep them identical, so FK steering
  needs a stochastic one (an error names the fix).
"""

from __future__ import annotations

import torch

from gen.errors import ArgumentError, require_choice, require_int, require_number
from gen.core.denoiser import DenoiserOutput
from gen.core.hooks import SamplingHook
from gen.guidance.svdd import check_stochastic
from gen.guidance.values import PosteriorMeanValue

POTENTIALS = ("rt", "max", "sum", "difference")


class _Particles(SamplingHook):
    def __init__(self, reward, num_particles: int, max_batch: int | None, seed: int, latent_reward: bool):
        require_int(num_particles, "num_particles", minimum=1)
        require_int(max_batch, "max_batch", minimum=1, optional=True)
        require_int(seed, "seed", minimum=0)
        self.value = PosteriorMeanValue(reward, latent_reward=latent_reward)
        self.num_particles, self.max_batch, self.seed = num_particles, max_batch, seed
        self._x = self._prediction = None

    def validate(self, run) -> None:
        if not self.value.latent_reward and not run.has_decoder:
            raise ArgumentError("reward: scoring needs decoded images but the run has no decoder; use a gen pipeline or steer(), or pass decode= to sample().")

    def _start(self, state, ctx):
        """The population at the first step: the run's noise for particle 0, seeded noise for the others."""
        extra_rows = (self.num_particles - 1) * ctx.batch_size
        extra = torch.randn((extra_rows, *state.x.shape[1:]), generator=self.generator, dtype=torch.float32).to(state.x) * ctx.init_noise_sigma
        self.reset(ctx)
        if extra_rows == 0:
            return state.x, state.prediction
        return torch.cat([state.x, extra]), DenoiserOutput.concat([state.prediction, ctx.predict(extra, self.max_batch)])

    def setup(self, run) -> None:
        """Per run: the particles' noise and resampling draws seeded from the run's generator and `seed`."""
        self.generator = run.hook_generator(self.seed)
        self._x = self._prediction = None

    def reset(self, ctx) -> None:
        pass

    def reweight(self, x, prediction, ctx, step_index):
        return x, prediction

    def transition(self, state, ctx):
        if state.step.index == 0 or self._x is None:
            x, prediction = self._start(state, ctx)
        else:
            x, prediction = self._x, self._prediction
            if prediction is None:
                prediction = ctx.predict(x, self.max_batch)
        stepped = ctx.scheduler_step(prediction.output, x)
        batch = ctx.batch_size
        if ctx.is_last:
            values = self.value.score(stepped, stepped, None, ctx, None)
            best = values.reshape(self.num_particles, batch).argmax(0) * batch + torch.arange(batch)
            self.final_values = values.reshape(self.num_particles, batch)
            self._x = self._prediction = None
            return ctx.next_state(stepped[best])
        nxt, reusable = ctx.predict_next(stepped, self.max_batch)
        stepped, nxt = self.reweight(stepped, nxt, ctx, state.step.index)
        self._x, self._prediction = stepped, (nxt if reusable else None)
        visible = torch.arange(batch)
        return ctx.next_state(stepped[:batch], nxt.select(visible) if reusable else None)


class BestOfN(_Particles):
    """N independent samples per prompt, keep the highest-reward one. Works with deterministic samplers too.

    Example:
        >>> pipe(class_labels=[3] * 4, hooks=[BestOfN(classifier_log_prob(clf, 3), n=4)])
    """

    def __init__(self, reward, n: int = 4, max_batch: int | None = None, seed: int = 0, latent_reward: bool = False):
        super().__init__(reward, n, max_batch, seed, latent_reward)

    def __repr__(self) -> str:
        return f"BestOfN(n={self.num_particles})"


class FKSteering(_Particles):
    """Feynman-Kac steering: particles resampled by potentials of intermediate rewards (see module docstring).

    Args:
        reward: batched reward on images in [0, 1].
        num_particles: N per sample.
        potential: "max" (default), "sum", "difference" or "rt".
        lmbda: lambda, the potentials' scale: weights are exp(lmbda * potential). 10 as in the reference.
        resample_every: steps between resampling steps; None: a fifth of the schedule (20 of 100 steps).
        resample_window: (start, end) as fractions of the schedule; resampling happens at step indices
            start*n, start*n + resample_every, ... up to end*n.
        ess_threshold: resample only when the effective sample size is below ess_threshold * N (0.5, the
            reference's adaptive resampling); None resamples at every resampling step.
    """

    def __init__(
        self,
        reward,
        num_particles: int = 4,
        potential: str = "max",
        lmbda: float = 10.0,
        resample_every: int | None = None,
        resample_window: tuple[float, float] = (0.2, 0.8),
        ess_threshold: float | None = 0.5,
        max_batch: int | None = None,
        seed: int = 0,
        latent_reward: bool = False,
    ):
        super().__init__(reward, num_particles, max_batch, seed, latent_reward)
        require_choice(potential, "potential", POTENTIALS)
        if require_number(lmbda, "lmbda", minimum=0) == 0:
            raise ArgumentError("lmbda: must be > 0 (the potentials' scale), got 0.")
        require_int(resample_every, "resample_every", minimum=1, optional=True)
        if not isinstance(resample_window, (tuple, list)) or len(resample_window) != 2:
            raise ArgumentError(f"resample_window: expected (start, end) fractions of the schedule, got {resample_window!r}.")
        start, end = (require_number(v, "resample_window", minimum=0, maximum=1) for v in resample_window)
        if start > end:
            raise ArgumentError(f"resample_window: need start <= end, got {resample_window!r}.")
        if require_number(ess_threshold, "ess_threshold", minimum=0, maximum=1, optional=True) == 0:
            raise ArgumentError("ess_threshold: must lie in (0, 1] or be None, got 0.")
        self.potential, self.lmbda, self.resample_every = potential, float(lmbda), resample_every
        self.resample_window, self.ess_threshold = (start, end), ess_threshold
        self.resamplings = 0

    def resampling_steps(self, num_steps: int) -> list[int]:
        """The step indices (0-based, counted before the step's update) at which particles are resampled."""
        every = self.resample_every or max(1, round(num_steps / 5))
        first, last = round(self.resample_window[0] * num_steps), round(self.resample_window[1] * num_steps)
        return [i for i in range(first, min(last, num_steps - 2) + 1, every)]

    def validate(self, run) -> None:
        super().validate(run)
        check_stochastic(run, "FKSteering")
        if self.resample_every is not None and self.resample_every >= len(run.timesteps):
            raise ArgumentError(
                f"resample_every: {self.resample_every} is not shorter than the {len(run.timesteps)}-step schedule, so FK steering would resample at most "
                f"once, at the start of its window; use resample_every < {len(run.timesteps)} (None: a fifth of the schedule)."
            )
        if not self.resampling_steps(len(run.timesteps)):
            raise ArgumentError(
                f"resample_every: with {len(run.timesteps)} steps, resample_every={self.resample_every} and resample_window="
                f"{self.resample_window} leave no resampling step (FK steering would be plain best-of-N); lower resample_every or widen the window."
            )

    def setup(self, run) -> None:
        super().setup(run)
        self._at = set(self.resampling_steps(len(run.timesteps)))

    def reset(self, ctx) -> None:
        self.previous = None  # the potential's memory: running max or sum, or the last rewards
        self.resamplings = 0

    def reweight(self, x, prediction, ctx, step_index):
        if step_index not in self._at:
            return x, prediction
        rewards = self.value.score(x, prediction.x0, ctx.next_timestep, ctx, step_index)
        previous = torch.zeros_like(rewards) if self.previous is None else self.previous
        if self.potential == "max":
            memory = rewards if self.previous is None else torch.maximum(previous, rewards)
        elif self.potential == "sum":
            memory = previous + rewards
        else:  # rt, difference: remember the rewards themselves
            memory = rewards
        stat = rewards - previous if self.potential == "difference" else memory
        n, batch = self.num_particles, ctx.batch_size
        weights = torch.softmax((self.lmbda * stat).reshape(n, batch), dim=0)
        ess = 1.0 / (weights**2).sum(dim=0)
        resample = torch.ones(batch, dtype=torch.bool) if self.ess_threshold is None else ess < self.ess_threshold * n
        picks = torch.multinomial(weights.T, n, replacement=True, generator=self.generator).T  # (n, batch)
        keep = torch.arange(n)[:, None].expand(n, batch)
        source = torch.where(resample[None], picks, keep)
        rows = (source * batch + torch.arange(batch)[None]).reshape(-1)
        self.resamplings += int(resample.sum())
        self.previous = memory[rows]
        return x[rows], prediction.select(rows)

    def __repr__(self) -> str:
        return (
            f"FKSteering(num_particles={self.num_particles}, potential={self.potential!r}, lmbda={self.lmbda}, "
            f"resample_every={self.resample_every}, resample_window={self.resample_window}, ess_threshold={self.ess_threshold})"
        )
