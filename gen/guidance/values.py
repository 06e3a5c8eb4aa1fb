"""Value estimators for value-guided search: how good a state x_t is expected to end up.

- `PosteriorMeanValue(reward)` (SVDD-PM): the reward of the decoded x0 estimate of x_t. It needs the
  model's prediction at each candidate (one evaluation each, reused for the chosen one).
- `LearnedValue(net)` (SVDD-MC): a network v(x_t, t) regressed on rewards of the model's own samples
  (see gen.training.value). It needs no model evaluation to score a candidate.

Both estimate E[r(x0) | x_t], the soft value v_t(x) = alpha * log E[exp(r(x0) / alpha) | x_t] in its
alpha -> infinity limit; as alpha -> 0 the soft value becomes the maximum reward reachable from x_t, which
the search's arg-max selection (SVDD with alpha = 0) approaches by keeping the best of M candidates.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from gen.errors import ArgumentTypeError, require_int
from gen.guidance.rewards import check_reward_values


class RewardError(RuntimeError):
    """A reward callable raised; the message says at which step and for which candidate."""


def _where(step: int | None, row: int, batch: int) -> str:
    at = f"at step {step}" if step is not None else "on the final samples"
    return f"{at}, candidate {row // batch} of sample {row % batch}"


def score_rewards(reward, images: torch.Tensor, batch: int, step: int | None, offset: int = 0, name: str = "reward") -> torch.Tensor:
    """reward(images) checked; if it raises, the failing row (offset: the first row's index among all
    candidates) is found and named."""
    try:
        values = reward(images)
    except Exception as err:
        for row in range(len(images)):
            try:
                reward(images[row : row + 1])
            except Exception:
                raise RewardError(f"{name} raised {_where(step, offset + row, batch)}: {type(err).__name__}: {err}") from err
        raise RewardError(f"{name} raised {_where(step, offset, batch)} (only in the batched call): {type(err).__name__}: {err}") from err
    where = "at step {}".format(step) if step is not None else "on the final samples"
    return check_reward_values(values, len(images), name, where)


class PosteriorMeanValue:
    """SVDD-PM value: reward(decode(x0_hat)). Decodes through the pipeline's VAE for latent models, in
    chunks of max_batch; with latent_reward=True the reward receives the x0 latents themselves."""

    needs_prediction = True

    def __init__(self, reward, latent_reward: bool = False, max_batch: int | None = None):
        if not callable(reward) or isinstance(reward, type):
            raise ArgumentTypeError(f"reward: expected a callable on images, got {type(reward).__name__}.")
        if not isinstance(latent_reward, bool):
            raise ArgumentTypeError(f"latent_reward: expected True or False, got {latent_reward!r}.")
        require_int(max_batch, "max_batch", minimum=1, optional=True)
        self.reward, self.latent_reward, self.max_batch = reward, latent_reward, max_batch

    def score(self, candidates: torch.Tensor, x0: torch.Tensor, timestep, ctx, step: int | None) -> torch.Tensor:
        rows = len(x0)
        chunk = self.max_batch or rows
        values = []
        for start in range(0, rows, chunk):
            part = x0[start : start + chunk]
            images = part if self.latent_reward else ctx.decode(part)
            values.append(score_rewards(self.reward, images, ctx.batch_size, step, offset=start))
            ctx.count_rewards(len(part))
        return torch.cat(values)


class LearnedValue:
    """SVDD-MC value: a network v(x_t, t) (e.g. `ValueNetwork`, trained by gen.training.value)."""

    needs_prediction = False

    def __init__(self, net, max_batch: int | None = None):
        if not callable(net):
            raise ArgumentTypeError(f"net: expected a callable value network, got {type(net).__name__}.")
        self.net, self.max_batch = net, max_batch

    @torch.no_grad()
    def score(self, candidates: torch.Tensor, x0, timestep, ctx, step: int | None) -> torch.Tensor:
        rows = len(candidates)
        chunk = self.max_batch or rows
        t = torch.zeros((), dtype=torch.float32) if timestep is None else torch.as_tensor(timestep, dtype=torch.float32)
        out = []
        for start in range(0, rows, chunk):
            part = candidates[start : start + chunk]
            values = self.net(part, t.expand(len(part)).to(part.device))
            out.append(check_reward_values(values, len(part), "value network", f"at step {step}"))
        return torch.cat(out)


class ValueNetwork(ModelMixin, ConfigMixin):
    """A small CNN v(x_t, t) -> expected final reward, for pixel or latent states."""

    @register_to_config
    def __init__(self, in_channels: int = 1, resolution: int = 16, width: int = 32, num_train_timesteps: int = 1000):
        super().__init__()
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, 2 * width)
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            [
                nn.Conv2d(width, width, 3, padding=1),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            ]
        )
        self.film = nn.Linear(2 * width, 2 * width)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(2 * width, 2 * width), nn.SiLU(), nn.Linear(2 * width, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x.to(self.dtype))
        for block in self.blocks:
            h = block(nn.functional.silu(h))
        pooled = h.mean(dim=(2, 3))
        temb = self.time_embed(self.time_proj(t.reshape(-1).to(x.device)).to(self.dtype))
        return self.head(pooled * (1 + self.film(temb)) + temb)[:, 0].float()
