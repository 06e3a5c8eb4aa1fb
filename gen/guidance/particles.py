"""Population-based peers of SVDD, as transition hooks: best-of-N and FK steering.

Both carry N particles per sample through the loop (particle 0 of each sample is the loop's visible state,
started from the run's own initial noise; the others start from the hook's seeded noise). All N*B
particles step through one batched scheduler call and one batched model call per step, and each
particle's prediction is reused at the next step, so a run costs N model evaluations per sample per
step: the same budget as SVDD with M = N.

- `BestOfN(reward, n)`: independent samples; at the end keep the one with the highest reward.
- `FKSteering(reward, num_particles, potential, resample_every, temperature)` (Singhal et al. 2025):
  every `resample_every` steps the particles are scored with the reward of their decoded x0 estimate and
  resampled (multinomially, within each sample) with weights exp(potential / temperature), where the
  potential is the running max of the rewards ("max"), their sum ("sum"), or the change since the
  previous scoring step ("difference"). With ess_threshold set, resampling happens only when the effective sample
  size falls below ess_threshold * N. At the end the particle with the highest reward is kept.
"""

from __future__ import annotations

import torch

from gen.core.denoiser import DenoiserOutput
from gen.guidance.values import PosteriorMeanValue
from gen.core.hooks import SamplingHook

POTENTIALS = ("max", "sum", "difference")


class _Particles(SamplingHook):
    def __init__(self, reward, num_particles: int, max_batch: int | None, seed: int, latent_reward: bool):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles: must be an integer >= 1, got {num_particles!r}.")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1 or None, got {max_batch!r}.")
        self.value = PosteriorMeanValue(reward, latent_reward=latent_reward)
        self.num_particles, self.max_batch, self.seed = num_particles, max_batch, seed
        self._x = self._prediction = None

    def validate(self, run) -> None:
        if not self.value.latent_reward and not run.has_decoder:
            raise ValueError("reward: scoring needs decoded images but the run has no decoder; use a gen pipeline or steer(), or pass decode= to sample().")

    def _start(self, state, ctx):
        """The population at the first step: the run's noise for particle 0, seeded noise for the others."""
        self.generator = torch.Generator().manual_seed(self.seed)
        extra_rows = (self.num_particles - 1) * ctx.batch_size
        extra = torch.randn((extra_rows, *state.x.shape[1:]), generator=self.generator, dtype=torch.float32).to(state.x) * ctx.init_noise_sigma
        self.reset(ctx)
        if extra_rows == 0:
            return state.x, state.prediction
        return torch.cat([state.x, extra]), DenoiserOutput.concat([state.prediction, ctx.predict(extra, self.max_batch)])

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
        potential: "max", "sum" or "difference".
        resample_every: score and (maybe) resample every this many steps.
        temperature: weights are exp(potential / temperature); smaller is greedier.
        ess_threshold: None resamples at every scoring step; a value in (0, 1] resamples only when the
            effective sample size is below ess_threshold * N (0.5 is the usual choice).
    """

    def __init__(self, reward, num_particles: int = 4, potential: str = "max", resample_every: int = 5, temperature: float = 1.0,
                 ess_threshold: float | None = None, max_batch: int | None = None, seed: int = 0, latent_reward: bool = False):
        super().__init__(reward, num_particles, max_batch, seed, latent_reward)
        if potential not in POTENTIALS:
            raise ValueError(f"potential: one of {POTENTIALS}, got {potential!r}.")
        if not isinstance(resample_every, int) or resample_every < 1:
            raise ValueError(f"resample_every: must be an integer >= 1, got {resample_every!r}.")
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature!r}.")
        if ess_threshold is not None and not 0 < ess_threshold <= 1:
            raise ValueError(f"ess_threshold: must lie in (0, 1] or be None, got {ess_threshold!r}.")
        self.potential, self.resample_every, self.temperature, self.ess_threshold = potential, resample_every, float(temperature), ess_threshold
        self.resamplings = 0

    def reset(self, ctx) -> None:
        rows = self.num_particles * ctx.batch_size
        self.running = torch.full((rows,), float("-inf")) if self.potential == "max" else torch.zeros(rows)
        self.last = None
        self.resamplings = 0

    def reweight(self, x, prediction, ctx, step_index):
        if (step_index + 1) % self.resample_every:
            return x, prediction
        rewards = self.value.score(x, prediction.x0, ctx.next_timestep, ctx, step_index)
        if self.potential == "max":
            self.running = torch.maximum(self.running, rewards)
            stat = self.running
        elif self.potential == "sum":
            self.running = self.running + rewards
            stat = self.running
        else:
            stat = rewards - (self.last if self.last is not None else torch.zeros_like(rewards))
        n, batch = self.num_particles, ctx.batch_size
        log_w = (stat / self.temperature).reshape(n, batch)
        weights = torch.softmax(log_w, dim=0)
        ess = 1.0 / (weights**2).sum(dim=0)
        resample = torch.ones(batch, dtype=torch.bool) if self.ess_threshold is None else ess < self.ess_threshold * n
        picks = torch.multinomial(weights.T, n, replacement=True, generator=self.generator).T  # (n, batch)
        keep = torch.arange(n)[:, None].expand(n, batch)
        source = torch.where(resample[None], picks, keep)
        rows = (source * batch + torch.arange(batch)[None]).reshape(-1)
        self.resamplings += int(resample.sum())
        self.running = self.running[rows]
        self.last = rewards[rows]
        return x[rows], prediction.select(rows)

    def __repr__(self) -> str:
        return f"FKSteering(num_particles={self.num_particles}, potential={self.potential!r}, resample_every={self.resample_every}, temperature={self.temperature})"
