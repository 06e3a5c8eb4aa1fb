"""DT-visualization (Gandikota & Bau 2025): the x0 prediction at every step, as a strip per sample.

    >>> viz = DTVisualizer()
    >>> pipe(class_labels=[3] * 4, hooks=[viz])
    >>> viz.save("strip.png")          # rows: samples, columns: steps

Seeing when the final image's layout is decided (usually within the first step or two) is what motivates
running the base model early and the distilled model late.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from gen.errors import ArgumentError
from gen.core.hooks import SamplingHook
from gen.io import save_image


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return (x / 2 + 0.5).clamp(0, 1)


class DTVisualizer(SamplingHook):
    """An observe hook that keeps the x0 estimate (on the CPU) at every step.

    Args:
        decode: latents -> images in [0, 1]; by default the run's own decoder (a steered or gen pipeline's
            VAE, Flux's unpacking included), else the pixel models' [-1, 1] -> [0, 1].
        max_samples: how many samples (rows) to keep.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor] | None = None, max_samples: int = 8):
        self.given_decode = decode
        self.decode = decode or _pixels
        self.max_samples = max_samples
        self.frames: list[torch.Tensor] = []
        self.timesteps: list[float] = []
        self.device = torch.device("cpu")

    def setup(self, run) -> None:
        self.decode = self.given_decode or run.decode or _pixels

    def observe(self, state) -> None:
        if state.step.index == 0:
            self.frames, self.timesteps = [], []
        self.device = state.x0.device
        self.frames.append(state.x0[: self.max_samples].detach().float().cpu())
        self.timesteps.append(float(state.step.timestep))

    def images(self) -> torch.Tensor:
        """(steps, samples, C, H, W) in [0, 1]."""
        if not self.frames:
            raise ArgumentError("DTVisualizer: nothing recorded yet; pass it in hooks=[...] of a sampling call first.")
        with torch.no_grad():
            return torch.stack([self.decode(frame.to(self.device)).float().cpu() for frame in self.frames])

    def strip(self, scale: int = 1, gap: int = 1) -> Image.Image:
        """A grid image: one row per sample, one column per step."""
        frames = self.images()
        steps, samples, channels, h, w = frames.shape
        canvas = torch.ones(channels, samples * (h + gap) - gap, steps * (w + gap) - gap)
        for s in range(steps):
            for r in range(samples):
                canvas[:, r * (h + gap) : r * (h + gap) + h, s * (w + gap) : s * (w + gap) + w] = frames[s, r]
        array = (canvas.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        image = Image.fromarray(array[..., 0] if channels == 1 else array)
        return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image

    def save(self, path: str | Path, scale: int = 4) -> Path:
        return save_image(path, self.strip(scale))

    def change_per_step(self) -> list[float]:
        """Mean absolute change of the x0 estimate between consecutive steps: where the image is decided."""
        frames = torch.stack(self.frames)
        return (frames[1:] - frames[:-1]).abs().flatten(1).mean(dim=1).tolist()
