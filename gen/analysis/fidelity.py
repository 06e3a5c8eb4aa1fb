"""Does a large image regenerated from an embedding grid look like its reference? Measures for the
large-image path (Graikos et al., CVPR 2024), each on images (1, 3, H, W) in [0, 1]:

- `patch_cosine`: cut the output on the grid's patches, re-embed, cosine to the grid cell it came from.
- `background_gap`: where the reference is black (< 0.05), how much brighter the output is.
- `vesselness_correlation`: Pearson correlation of the Frangi vesselness maps (scikit-image) of the two
  images' green channels inside the fundus: are the vessels where they were?
- `patch_frechet`: Fréchet distance between the feature sets of the two images' patches (the patch
  encoder's representation); compare with the same number for a disjoint real crop (`real_vs_real`).
- `seam_strength`: mean |gradient| across tile borders over the mean inside tiles (1 = no seam).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gen.errors import ArgumentError
from gen.analysis.metrics import frechet_distance
from gen.core.tiling import tile_starts

BACKGROUND = 0.05


def _check(image: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ArgumentError(f"{name}: expected a (1, 3, H, W) tensor in [0, 1], got {tuple(getattr(image, 'shape', ())) or type(image).__name__}.")
    return image.float().cpu()


def grid_patches(image: torch.Tensor, patch: int) -> torch.Tensor:
    """The non-overlapping patch x patch crops of image, row-major: (rows * cols, 3, patch, patch)."""
    _, c, h, w = image.shape
    rows, cols = h // patch, w // patch
    crops = image[0, :, : rows * patch, : cols * patch].unfold(1, patch, patch).unfold(2, patch, patch)
    return crops.permute(1, 2, 0, 3, 4).reshape(rows * cols, c, patch, patch)


def patch_cosine(embedder, image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Per-cell cosine between the output's re-embedded patches and the grid (h, w, D) it was made from."""
    image = _check(image, "image")
    rows, cols, _ = grid.shape
    patch = image.shape[2] // rows
    if image.shape[2] != rows * patch or image.shape[3] != cols * patch:
        raise ArgumentError(f"image: {tuple(image.shape[2:])} is not the grid {rows}x{cols} times one patch size.")
    embedded = embedder.embed_images(grid_patches(image, patch)).float()
    return F.cosine_similarity(embedded, grid.reshape(rows * cols, -1).float().cpu(), dim=-1).reshape(rows, cols)


def background_mask(reference: torch.Tensor) -> torch.Tensor:
    return _check(reference, "reference")[0].mean(0) < BACKGROUND


def background_gap(reference: torch.Tensor, output: torch.Tensor) -> float | None:
    """Mean output brightness minus mean reference brightness where the reference is black; None if it has no
    black pixels."""
    mask = background_mask(reference)
    if not mask.any():
        return None
    return float(_check(output, "output")[0].mean(0)[mask].mean() - _check(reference, "reference")[0].mean(0)[mask].mean())


def fundus_mask(reference: torch.Tensor, margin: int = 12) -> torch.Tensor:
    """Pixels inside the fundus, `margin` pixels away from its rim (whose edge every ridge filter flags)."""
    inside = (_check(reference, "reference")[0].mean(0) > 0.08).float()[None, None]
    eroded = -F.max_pool2d(-inside, 2 * margin + 1, stride=1, padding=margin)
    return eroded[0, 0] > 0.5


def vesselness(image: torch.Tensor, sigmas=(1.0, 2.0, 3.0)) -> np.ndarray:
    """Frangi vesselness of the green channel (vessels are dark ridges there)."""
    from skimage.filters import frangi

    green = _check(image, "image")[0, 1].numpy().astype(np.float64)
    return frangi(green, sigmas=sigmas, black_ridges=True)


def vesselness_correlation(reference: torch.Tensor, output: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Pearson correlation of the two vesselness maps over mask (default: the reference's fundus)."""
    mask = (fundus_mask(reference) if mask is None else mask).numpy()
    if mask.sum() < 2:
        raise ArgumentError("mask: fewer than two pixels to correlate.")
    a, b = vesselness(reference)[mask], vesselness(output)[mask]
    return float(np.corrcoef(a, b)[0, 1])


def patch_frechet(features, reference: torch.Tensor, output: torch.Tensor, patch: int = 32, stride: int = 16) -> float:
    """Fréchet distance between features(patches) of the two images (patches every `stride` pixels)."""

    def patches(image):
        crops = _check(image, "image")[0].unfold(1, patch, stride).unfold(2, patch, stride)
        return crops.permute(1, 2, 0, 3, 4).reshape(-1, 3, patch, patch)

    with torch.no_grad():
        return frechet_distance(features(patches(reference)).float().cpu(), features(patches(output)).float().cpu())


def seam_strength(image: torch.Tensor, tile: int, stride: int) -> float:
    """Mean |gradient| on tile borders over the mean |gradient| elsewhere, the larger of the two directions."""
    ratios = []
    for dim in (2, 3):
        grad = (image.narrow(dim, 1, image.shape[dim] - 1) - image.narrow(dim, 0, image.shape[dim] - 1)).abs()
        length = image.shape[dim]
        starts = tile_starts(length, tile, stride)
        borders = {s - 1 for s in starts if s > 0} | {s + tile - 1 for s in starts if s + tile < length}
        mask = torch.zeros(length - 1, dtype=torch.bool)
        mask[sorted(borders)] = True
        profile = grad.float().mean(dim=[d for d in range(4) if d != dim])
        ratios.append((profile[mask].mean() / profile[~mask].mean()).item())
    return max(ratios)


def nearest_source(embedder, images: torch.Tensor, bank: torch.Tensor, bank_sources: torch.Tensor, patch: int = 32) -> torch.Tensor:
    """For every patch x patch cell of images (N, 3, H, W): the source label of its nearest embedding in bank
    (M, D) (labels bank_sources, (M,)). Tells which data set a generated patch looks like."""
    if bank.ndim != 2 or bank_sources.shape != (len(bank),):
        raise ArgumentError(f"bank_sources: expected one label per bank row ({len(bank)}), got shape {tuple(bank_sources.shape)}.")
    cells = torch.cat([grid_patches(_check(image[None], "images"), patch) for image in images])
    with torch.no_grad():
        embedded = embedder.embed_images(cells).float()
    return bank_sources[torch.cdist(embedded, bank.float().cpu()).argmin(1)]
