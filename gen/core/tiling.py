"""`TiledDenoiser`: one denoiser call over a canvas larger than the backbone's tile, MultiDiffusion-style.

The canvas is covered by overlapping tiles (the last row and column of tiles flush with the far edges).
At every call each tile is evaluated by the inner denoiser, in batches of at most ``tile_batch_size``
rows, and the model outputs are averaged where tiles overlap, so the loop then takes one ordinary
scheduler step on the whole canvas: every step re-fuses the overlaps and no seam survives. Activation
memory is bounded by the tile batch; only the canvas itself and its accumulators grow with the output.

Conditions: ``{"embedding_grid": (B, D, h, w)}`` gives each tile the embedding bilinearly interpolated at
its centre (grid cell (i, j) is centred on patch (i, j) of the canvas) as a one-token
``encoder_hidden_states``; any other backbone keyword arguments are shared by every tile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gen.core.backbones import Condition
from gen.core.denoiser import Denoiser, DenoiserOutput

BLENDS = ("uniform", "cosine")


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile`, `stride` apart, the last one flush."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _window(tile: int, blend: str) -> torch.Tensor:
    if blend == "uniform":
        return torch.ones(tile, tile)
    ramp = torch.sin(math.pi * (torch.arange(tile) + 0.5) / tile).clamp(min=1e-3)
    return ramp[:, None] * ramp[None, :]


class TiledDenoiser(Denoiser):
    """Wraps a denoiser whose backbone sees `tile` x `tile` latents; evaluates any larger canvas.

    Args:
        inner: the tile denoiser.
        tile: tile side in latent pixels.
        overlap: latent pixels shared by neighbouring tiles (0 <= overlap < tile).
        tile_batch_size: most tiles (times batch) evaluated in one backbone call.
        patch: canvas pixels per embedding-grid cell (latent units).
        blend: a "cosine" window that weighs tile centres more (default), or "uniform" averaging (MultiDiffusion).
    """

    def __init__(self, inner: Denoiser, tile: int, overlap: int, tile_batch_size: int = 64, patch: int | None = None, blend: str = "cosine"):
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap: must satisfy 0 <= overlap < tile ({tile}), got {overlap}; reduce the overlap.")
        if tile_batch_size < 1:
            raise ValueError(f"tile_batch_size: must be >= 1, got {tile_batch_size}.")
        if blend not in BLENDS:
            raise ValueError(f"blend: one of {BLENDS}, got {blend!r}.")
        self.__dict__.update(inner.__dict__)
        self.inner, self.tile, self.overlap = inner, tile, overlap
        self.stride, self.tile_batch_size = tile - overlap, tile_batch_size
        self.patch = patch or tile
        self.window = _window(tile, blend)

    def check_latents(self, x, name: str = "latents") -> None:
        if isinstance(x, torch.Tensor) and x.ndim == 4 and min(x.shape[2:]) < self.tile:
            raise ValueError(f"{name}: the canvas {tuple(x.shape[2:])} is smaller than one tile ({self.tile}); make the output at least one tile large.")
        Denoiser.check_latents(self.inner, x[..., : self.tile, : self.tile] if isinstance(x, torch.Tensor) and x.ndim == 4 else x, name)

    def check_condition(self, cond: Condition | None, batch: int, name: str = "cond") -> None:
        cond = dict(cond or {})
        grid = cond.pop("embedding_grid", None)
        if grid is not None:
            width = self.inner.backbone.widths().get("encoder_hidden_states")
            if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[0] != batch:
                raise ValueError(f"{name}['embedding_grid']: expected (batch={batch}, D, h, w), got {tuple(getattr(grid, 'shape', ()))}.")
            if width is not None and grid.shape[1] != width:
                raise ValueError(f"{name}['embedding_grid']: embedding width {grid.shape[1]} does not match the model's {width}.")
            if not torch.isfinite(grid).all():
                raise ValueError(f"{name}['embedding_grid']: contains NaN or infinite values.")
            cond["encoder_hidden_states"] = torch.zeros(batch, 1, grid.shape[1])
        self.inner.check_condition(cond, batch, name)

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(y, x) for y in tile_starts(height, self.tile, self.stride) for x in tile_starts(width, self.tile, self.stride)]

    def _tile_condition(self, cond: Condition | None, spots: list[tuple[int, int]], canvas: tuple[int, int], batch: int) -> Condition | None:
        """Per-row conditions for the tiles at `spots` (rows ordered tile-major, then batch)."""
        if cond is None:
            return None
        out: Condition = {}
        for key, value in cond.items():
            if key == "embedding_grid":
                h, w = canvas
                centres = torch.tensor([[x + self.tile / 2, y + self.tile / 2] for y, x in spots], dtype=torch.float32)
                # grid cell (i, j) is centred at ((j + 0.5) * patch, (i + 0.5) * patch): normalise for grid_sample
                gx = centres[:, 0] / (value.shape[3] * self.patch) * 2 - 1
                gy = centres[:, 1] / (value.shape[2] * self.patch) * 2 - 1
                coords = torch.stack([gx, gy], -1)[None, None].expand(batch, 1, -1, 2).to(value)
                sampled = F.grid_sample(value, coords, mode="bilinear", padding_mode="border", align_corners=False)  # (B, D, 1, n)
                out["encoder_hidden_states"] = sampled[:, :, 0].permute(2, 0, 1).reshape(-1, 1, value.shape[1])
            elif isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
                out[key] = value.repeat(len(spots), *([1] * (value.ndim - 1)))
            else:
                out[key] = value
        return out

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale: float = 1.0, guidance_rescale: float = 0.0) -> DenoiserOutput:
        batch, _, height, width = x.shape
        spots = self.positions(height, width)
        per_call = max(1, self.tile_batch_size // batch)
        channels = self.in_channels
        fused = torch.zeros(batch, channels, height, width, dtype=torch.float32, device=x.device)
        weight = torch.zeros(1, 1, height, width, dtype=torch.float32, device=x.device)
        window = self.window.to(x.device)
        evaluations = 0
        for start in range(0, len(spots), per_call):
            chunk = spots[start : start + per_call]
            tiles = torch.cat([x[:, :, y : y + self.tile, c : c + self.tile] for y, c in chunk])
            out = self.inner(
                tiles, t,
                cond=self._tile_condition(cond, chunk, (height, width), batch),
                uncond=self._tile_condition(uncond, chunk, (height, width), batch),
                guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            )
            evaluations += out.evaluations
            for k, (y, c) in enumerate(chunk):
                fused[:, :, y : y + self.tile, c : c + self.tile] += out.output[k * batch : (k + 1) * batch, :channels].float() * window
                weight[:, :, y : y + self.tile, c : c + self.tile] += window
        output = (fused / weight).to(x.dtype)
        return DenoiserOutput(output=output, evaluations=evaluations, x0_fn=lambda: self.x0(x, output, t))
