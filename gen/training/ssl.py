"""Self-supervised training of an image encoder with SimCLR (Chen et al. 2020): two augmented views of
each patch, an NT-Xent loss on the projection head's outputs. Used to make the zoo's `patch-encoder`."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from gen.data.tissue import crop_batch, quarter_turns


def augment(crops: torch.Tensor, size: int, generator: torch.Generator, turns: bool = True, jitter: float = 1.0) -> torch.Tensor:
    """A random view: crop, (quarter turn, flip,) brightness/contrast/saturation jitter scaled by `jitter`,
    sometimes blur. Without turns the encoder keeps orientation (where vessels run), which a model that
    regenerates images from the embeddings needs."""
    b, _, h, w = crops.shape
    ys = torch.randint(0, h - size + 1, (b,), generator=generator)
    xs = torch.randint(0, w - size + 1, (b,), generator=generator)
    views = crop_batch(crops, ys, xs, size)
    if turns:
        views = quarter_turns(views, torch.randint(0, 4, (b,), generator=generator))
        flip = torch.rand(b, generator=generator) < 0.5
        views[flip] = views[flip].flip(-1)
    rand = lambda lo, hi: (1 + (lo - 1) * jitter + (hi - lo) * jitter * torch.rand(b, 1, 1, 1, generator=generator))
    gray = views.mean(dim=1, keepdim=True)
    views = gray + (views - gray) * rand(0.6, 1.4)  # saturation
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = mean + (views - mean) * rand(0.7, 1.3) + (rand(0.85, 1.15) - 1)  # contrast, brightness
    blur = torch.rand(b, generator=generator) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None]) / 16
        views[blur] = F.conv2d(F.pad(views[blur], (1, 1, 1, 1), mode="reflect"), kernel.expand(3, 1, 3, 3), groups=3)
    return views.clamp(0, 1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([a, b]), dim=-1)
    logits = z @ z.T / temperature
    n = len(a)
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def train_simclr(
    encoder,
    sample_crops: Callable[[int, torch.Generator], torch.Tensor],
    steps: int = 600,
    batch_size: int = 256,
    view_size: int = 32,
    temperature: float = 0.2,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    turns: bool = True,
    jitter: float = 1.0,
) -> list:
    """Train `encoder` (with `represent()` and a `projection` head) on crops from sample_crops(n, g)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    encoder.train()
    history = []
    for step in tqdm(range(steps), desc="simclr", disable=not progress):
        crops = sample_crops(batch_size, g)
        a = encoder.projection(encoder.represent(augment(crops, view_size, g, turns, jitter)))
        b = encoder.projection(encoder.represent(augment(crops, view_size, g, turns, jitter)))
        loss = nt_xent(a, b, temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 25 == 0:
            history.append([step + 1, loss.item()])
    encoder.eval()
    return history
