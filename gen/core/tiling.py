"""`TiledDenoiser`: one denoiser call over a canvas larger than the backbone's tile, MultiDiffusion-style.

The canvas is covered by overlapping tiles (the last row and column of tiles flush with the far edges).
At every call the tiles are gathered from the canvas with one index operation per batch of tiles,
evaluated by the inner denoiser, weighted by a window and scatter-added back (`index_add_`), then divided
by the summed windows, so the loop takes one ordinary scheduler step on the whole canvas: every step
re-fuses the overlaps and no seam survives. Activation memory is bounded by the tile batch (picked from
free memory unless given); only the canvas and its accumulators grow with the output. Tiles are cast to
the inner denoiser's dtype and fused in float32, so the canvas may be float32 under a half-precision model.

Packed backbones (Flux, Qwen-Image: 2x2 patches as tokens) tile the same spatial canvas, (B, C, H, W) with C
a quarter of the model's channels: each tile is packed for the model, given its tokens' positions, and its
output unpacked before it is fused.

Conditions: ``{"embedding_grid": (B, D, h, w)}`` gives each tile the embedding interpolated at its centre
from the cells' centres on the canvas (`cell_centres`; by default cell (i, j) is centred on the i-th, j-th
tile-sized patch), by default on the sphere (slerp, as the reference implementation does: linear mixing
shrinks the norm the model was trained on), as the backbone's embedding condition; a grid with one cell per
tile position gives every tile its own embedding unmixed. Any other backbone keyword arguments are shared by
every tile.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from gen.errors import ArgumentError
from gen.core.backbones import Condition, pack, unpack
from gen.core.denoiser import Denoiser, DenoiserOutput

BLENDS = ("uniform", "cosine")
INTERPOLATIONS = ("slerp", "bilinear")
# Largest automatic tile batch on a CPU: per-row throughput stops improving well before memory runs out.
CPU_TILE_BATCH_CAP = 64
GPU_TILE_BATCH_CAP = 2048


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


def slerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last dimension: the direction moves along the great circle, the
    norm linearly; nearly parallel (or zero) vectors fall back to linear mixing."""
    w = w.unsqueeze(-1)
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    omega = (unit_a * unit_b).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7).acos()
    sin = omega.sin()
    parallel = sin < 1e-4
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - w, ((1 - w) * omega).sin() / safe)
    wb = torch.where(parallel, w, (w * omega).sin() / safe)
    direction = F.normalize(wa * unit_a + wb * unit_b, dim=-1)
    return direction * ((1 - w) * norm_a + w * norm_b)


def fractional_index(positions: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Where each position lies among the increasing cell centres, in cells: linear between neighbouring
    centres (which need not be evenly spaced), clamped to the first and last cell."""
    centres = centres.to(positions)
    if len(centres) == 1:
        return torch.zeros_like(positions)
    positions = positions.clamp(centres[0], centres[-1])
    left = (torch.searchsorted(centres, positions, right=True) - 1).clamp(0, len(centres) - 2)
    return left + (positions - centres[left]) / (centres[left + 1] - centres[left])


def interpolate_grid(grid: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str = "slerp") -> torch.Tensor:
    """The grid (B, D, h, w) at fractional cell coordinates (ys, xs) (n points; cell (i, j) sits at (i, j)),
    clamped to the grid's edge: (B, n, D). Bilinear in the cells' positions; `mode` says how two
    embeddings mix (slerp or linear)."""
    b, d, h, w = grid.shape
    dtype, grid = grid.dtype, grid.float()  # acos and sin in half precision lose the small angles
    ys, xs = ys.to(grid.device).clamp(0, h - 1), xs.to(grid.device).clamp(0, w - 1)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy, wx = ys - y0, xs - x0
    cells = grid.permute(0, 2, 3, 1)  # (B, h, w, D)
    mix = slerp if mode == "slerp" else (lambda a, c, t: a + (c - a) * t.unsqueeze(-1))
    top = mix(cells[:, y0, x0], cells[:, y0, x1], wx.expand(b, -1))
    bottom = mix(cells[:, y1, x0], cells[:, y1, x1], wx.expand(b, -1))
    return mix(top, bottom, wy.expand(b, -1)).to(dtype)


def free_memory(device: torch.device) -> int:
    """Bytes free on device (the CUDA allocator's view, or the system's available memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@torch.no_grad()
def activation_bytes_per_row(inner: Denoiser, tile: int, cond: Condition | None) -> int:
    """An upper bound on the activation memory one tile row costs: the bytes of every module output in a
    forward of one row (`cond` holds one row)."""
    total = [0]

    def count(module, args, output):
        for value in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(value, torch.Tensor):
                total[0] += value.numel() * value.element_size()

    handles = [m.register_forward_hook(count) for m in inner.model.modules() if not list(m.children())]
    try:
        spec = inner.backbone.spec
        if spec.layout == "tokens":  # one packed tile, placed as the tiler places it
            x = torch.zeros(1, (tile // 2) ** 2, inner.in_channels, device=inner.device, dtype=inner.dtype)
            cond = {**(cond or {}), **spec.tile_condition(1, tile // 2, tile // 2, inner.device)}
        else:
            x = torch.zeros(1, inner.in_channels, tile, tile, device=inner.device, dtype=inner.dtype)
        inner.forward(x, torch.tensor(500), cond)
    finally:
        for handle in handles:
            handle.remove()
    return max(total[0], 1)


class TiledDenoiser(Denoiser):
    """Wraps a denoiser whose backbone sees `tile` x `tile` latents; evaluates any larger canvas.

    Args:
        inner: the tile denoiser.
        tile: tile side in latent pixels.
        overlap: latent pixels shared by neighbouring tiles (0 <= overlap < tile).
        tile_batch_size: most tile rows (tiles x batch, x2 under guidance) per backbone call; None picks it
            from free memory at the first call (capped at 64 on a CPU, 2048 on a GPU).
        cell_centres: (rows, columns): the canvas positions (latent pixels, increasing) of the embedding grid's
            cell centres along each axis; None puts cell (i, j) at the centre of the i-th, j-th tile-sized patch.
        blend: a "cosine" window that weighs tile centres more (default), or "uniform" averaging (MultiDiffusion).
        interpolation: how embeddings mix between grid cells: "slerp" (default) or "bilinear".
    """

    def __init__(
        self,
        inner: Denoiser,
        tile: int,
        overlap: int,
        tile_batch_size: int | None = None,
        cell_centres: tuple[torch.Tensor, torch.Tensor] | None = None,
        blend: str = "cosine",
        interpolation: str = "slerp",
    ):
        if not 0 <= overlap < tile:
            raise ArgumentError(f"overlap: must satisfy 0 <= overlap < tile ({tile}), got {overlap}; reduce the overlap.")
        if tile_batch_size is not None and (isinstance(tile_batch_size, bool) or not isinstance(tile_batch_size, int) or tile_batch_size < 1):
            raise ArgumentError(f"tile_batch_size: must be an integer >= 1 or None (picked from free memory), got {tile_batch_size!r}.")
        if blend not in BLENDS:
            raise ArgumentError(f"blend: one of {BLENDS}, got {blend!r}.")
        if interpolation not in INTERPOLATIONS:
            raise ArgumentError(f"interpolation: one of {INTERPOLATIONS}, got {interpolation!r}.")
        spec = inner.backbone.spec
        self.packed = spec.layout == "tokens"
        if self.packed and (spec.tile_condition is None or tile % 2):
            raise ArgumentError(
                f"tile: {inner.backbone.name} takes packed tokens; it can be tiled only in an even tile where its spec says how tiles are placed"
                f"{'' if spec.tile_condition is None else f' (got tile={tile})'}."
            )
        self.__dict__.update(inner.__dict__)
        self.inner, self.tile, self.overlap = inner, tile, overlap
        # the canvas's channels: a packed model's tokens carry 2x2 patches
        self.canvas_channels = inner.in_channels // 4 if self.packed else inner.in_channels
        self.stride, self.tile_batch_size = tile - overlap, tile_batch_size
        self.cell_centres = None if cell_centres is None else tuple(torch.as_tensor(c, dtype=torch.float32) for c in cell_centres)
        self.blend, self.interpolation = blend, interpolation
        self._layouts: dict = {}
        self._tile_conditions: dict = {}

    def check_latents(self, x, name: str = "latents") -> None:
        if isinstance(x, torch.Tensor) and x.ndim == 4 and min(x.shape[2:]) < self.tile:
            raise ArgumentError(f"{name}: the canvas {tuple(x.shape[2:])} is smaller than one tile ({self.tile}); make the output at least one tile large.")
        if self.packed:
            if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.canvas_channels:
                raise ArgumentError(
                    f"{name}: a tiled {self.inner.backbone.name} takes a (batch, {self.canvas_channels}, H, W) canvas (its tiles are packed), "
                    f"got {tuple(getattr(x, 'shape', ()))}."
                )
            x = pack(x[..., : self.tile, : self.tile])
        self.inner.check_latents(x[..., : self.tile, : self.tile] if isinstance(x, torch.Tensor) and x.ndim == 4 else x, name)

    def check_condition(self, cond: Condition | None, batch: int, name: str = "cond") -> None:
        cond = dict(cond or {})
        grid = cond.pop("embedding_grid", None)
        if grid is not None:
            width = self.inner.backbone.widths().get("encoder_hidden_states")
            if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[0] != batch:
                raise ArgumentError(f"{name}['embedding_grid']: expected (batch={batch}, D, h, w), got {tuple(getattr(grid, 'shape', ()))}.")
            if width is not None and grid.shape[1] != width:
                raise ArgumentError(f"{name}['embedding_grid']: embedding width {grid.shape[1]} does not match the model's {width}.")
            if not torch.isfinite(grid).all():
                raise ArgumentError(f"{name}['embedding_grid']: contains NaN or infinite values.")
            if self.cell_centres is not None and tuple(grid.shape[2:]) != tuple(map(len, self.cell_centres)):
                raise ArgumentError(f"{name}['embedding_grid']: {tuple(grid.shape[2:])} cells, but cell_centres places {tuple(map(len, self.cell_centres))}.")
            cond.update(self.inner.backbone.embedding_condition(torch.zeros(batch, grid.shape[1])))
        if self.packed:
            cond.update(self._placement(batch, torch.device("cpu")))
        self.inner.check_condition(cond, batch, name)

    def _placement(self, rows: int, device) -> Condition:
        return self.inner.backbone.spec.tile_condition(rows, self.tile // 2, self.tile // 2, device)

    def prediction_of(self, output: torch.Tensor) -> torch.Tensor:
        return output  # the fused canvas holds the prediction channels only

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(y, x) for y in tile_starts(height, self.tile, self.stride) for x in tile_starts(width, self.tile, self.stride)]

    def _layout(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per canvas size, computed once: the tile corners (n, 2), each tile pixel's flat canvas index
        (n, tile*tile), the window (tile*tile,) and the summed windows over the canvas (H*W,)."""
        key = (height, width, device)
        if key not in self._layouts:
            corners = torch.tensor(self.positions(height, width), device=device)
            offsets = torch.arange(self.tile, device=device)
            rows = corners[:, 0, None, None] + offsets[None, :, None]
            cols = corners[:, 1, None, None] + offsets[None, None, :]
            index = (rows * width + cols).reshape(len(corners), -1)
            window = _window(self.tile, self.blend).to(device).reshape(-1)
            weight = torch.zeros(height * width, device=device).index_add_(0, index.reshape(-1), window.repeat(len(corners)))
            self._layouts = {key: (corners, index, window, weight)}
        return self._layouts[key]

    def _per_tile(self, cond: Condition | None, corners: torch.Tensor, batch: int) -> Condition | None:
        """The condition of every tile, computed once per condition object: tile-major rows (tile k, sample
        b) -> row k * batch + b."""
        if cond is None:
            return None
        key = (id(cond), len(corners))
        cached = self._tile_conditions.get(key)
        if cached is not None and cached[0] is cond:
            return cached[1]
        n = len(corners)
        out: Condition = {}
        for name, value in cond.items():
            if name == "embedding_grid":
                centres = corners.to(torch.float32) + self.tile / 2  # (n, 2): y, x
                ys, xs = self.cell_centres or ((torch.arange(size) + 0.5) * self.tile for size in value.shape[2:])
                cells_y, cells_x = fractional_index(centres[:, 0], ys), fractional_index(centres[:, 1], xs)
                embeddings = interpolate_grid(value, cells_y, cells_x, self.interpolation)  # (B, n, D)
                out.update(self.inner.backbone.embedding_condition(embeddings.transpose(0, 1).reshape(n * batch, -1)))
            elif isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
                out[name] = value.repeat(n, *([1] * (value.ndim - 1)))
            else:
                out[name] = value
        # keep the two latest (this step's cond and uncond); a condition hook makes new ones every step
        self._tile_conditions = dict(list(self._tile_conditions.items())[-1:]) | {key: (cond, out)}
        return out

    def _rows(self, cond: Condition | None, first: int, last: int, total: int) -> Condition | None:
        """Rows first..last of a per-tile condition (tensors of `total` rows; shared ones, such as Flux's text
        positions, whole)."""
        if cond is None:
            return None
        rows = (
            lambda v: self._rows(v, first, last, total)
            if isinstance(v, dict)
            else v[first:last]
            if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == total
            else v
        )
        return {k: rows(v) for k, v in cond.items()}

    def pick_tile_batch(self, batch: int, cond: Condition | None, guided: bool, tiles: int = 1) -> int:
        """Tiles per backbone call: tile_batch_size rows, or what a quarter of free memory holds (`cond`: the
        per-tile condition of `tiles` tiles)."""
        rows = self.tile_batch_size
        if rows is None:
            one = self._rows(cond, 0, 1, tiles * batch) if cond is not None else None
            per_row = activation_bytes_per_row(self.inner, self.tile, one)
            cap = GPU_TILE_BATCH_CAP if self.inner.device.type == "cuda" else CPU_TILE_BATCH_CAP
            rows = self.tile_batch_size = int(max(1, min(cap, free_memory(self.inner.device) // 4 // per_row)))
        return max(1, rows // (batch * (2 if guided else 1)))

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale: float = 1.0, guidance_rescale: float = 0.0) -> DenoiserOutput:
        batch, channels, height, width = x.shape
        corners, index, window, weight = self._layout(height, width, x.device)
        n = len(corners)
        tile_cond, tile_uncond = self._per_tile(cond, corners, batch), self._per_tile(uncond, corners, batch)
        per_call = self.pick_tile_batch(batch, tile_cond, uncond is not None and guidance_scale > 1, n)
        flat = x.reshape(batch, channels, height * width)
        fused = torch.zeros(batch, self.canvas_channels, height * width, dtype=torch.float32, device=x.device)
        evaluations = 0
        for start in range(0, n, per_call):
            stop = min(start + per_call, n)
            pixels = index[start:stop].reshape(-1)
            tiles = flat[:, :, pixels].reshape(batch, channels, stop - start, self.tile, self.tile)
            tiles = tiles.permute(2, 0, 1, 3, 4).reshape((stop - start) * batch, channels, self.tile, self.tile).to(self.inner.dtype)
            tile_rows = self._rows(tile_cond, start * batch, stop * batch, n * batch)
            tile_rows_uncond = self._rows(tile_uncond, start * batch, stop * batch, n * batch)
            if self.packed:  # each tile as the model's tokens, placed as a tile of its own
                tiles, placement = pack(tiles), self._placement(len(tiles), x.device)
                tile_rows = {**(tile_rows or {}), **placement}
                tile_rows_uncond = None if tile_rows_uncond is None else {**tile_rows_uncond, **placement}
            out = self.inner(tiles, t, cond=tile_rows, uncond=tile_rows_uncond, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale)
            evaluations += out.evaluations
            prediction = unpack(out.output, self.tile, self.tile) if self.packed else out.output[:, : self.in_channels]
            values = prediction.float().reshape(stop - start, batch, self.canvas_channels, -1) * window
            fused.index_add_(2, pixels, values.permute(1, 2, 0, 3).reshape(batch, self.canvas_channels, -1))
        output = (fused / weight).reshape(batch, self.canvas_channels, height, width).to(x.dtype)
        return DenoiserOutput(output=output, evaluations=evaluations, x0_fn=lambda: self.x0(x, output, t))
