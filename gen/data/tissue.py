"""Real large images that ship with scikit-image, as training data for embedding-conditioned models.

- ``ihc``: `skimage.data.immunohistochemistry()`, 512x512 IHC pathology (DAB + haematoxylin).
- ``retina``: `skimage.data.retina()`, a fundus photograph, resized to 1024x1024.

Built from them:
- `ihc_patches`: random 32x32 patches of both (the dark fundus border excluded), with flips and
  quarter turns; each example also carries its source name as a caption.
- `embedding_grids`: 8x8 grids of an embedder's patch embeddings cut from both images (each grid covers
  256x256 pixels), with a caption naming the source: the training data of the text -> embedding-grid model.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from gen.errors import ArgumentError
from gen.data.dataset import TensorImageDataset

PATCH = 32
GRID = 8
CAPTIONS = {
    "ihc": [
        "immunohistochemistry stained tissue",
        "IHC pathology slide with brown DAB staining",
        "histology section with stained cell nuclei",
    ],
    "retina": [
        "retina fundus photograph",
        "retinal image with blood vessels",
        "fundus photo of the eye",
    ],
}
# Captions of whole-image views (the fundus seen entire, as a photograph shows it); crops take the others.
WHOLE_CAPTIONS = {"retina": ["retina fundus photograph", "fundus photo of the eye"]}


# The sides at which the large-image path regenerates each image: the patch models train on all of them.
SIDES = {"ihc": (512, 1024), "retina": (512, 1024)}
NATIVE = {"ihc": 512, "retina": 1024}


@functools.lru_cache(maxsize=None)
def reference_image(name: str, side: int | None = None) -> torch.Tensor:
    """(3, side, side) float in [0, 1]; by default IHC at its native 512 and the retina resized to 1024."""
    from skimage import data

    if name == "ihc":
        array = data.immunohistochemistry()
    elif name == "retina":
        array = data.retina()
    else:
        raise ArgumentError(f"name: one of 'ihc', 'retina', got {name!r}.")
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0
    side = side or NATIVE[name]
    if image.shape[1:] != (side, side):
        image = F.interpolate(image[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
    return image


def tissue_mask(patches: torch.Tensor) -> torch.Tensor:
    """Patches that show tissue, not the fundus photo's black surround."""
    return patches.mean(dim=(1, 2, 3)) > 0.08


def random_patches(
    name: str, count: int, size: int = PATCH, generator: torch.Generator | None = None, side: int | None = None, tissue_only: bool = True
) -> torch.Tensor:
    """`count` random size x size crops of a reference image (at `side`), by default only ones that show
    tissue: (count, 3, size, size) in [0, 1]."""
    image = reference_image(name, side)
    _, h, w = image.shape
    out = []
    while sum(len(o) for o in out) < count:
        ys = torch.randint(0, h - size + 1, (count,), generator=generator)
        xs = torch.randint(0, w - size + 1, (count,), generator=generator)
        crops = crop_batch(image[None].expand(count, -1, -1, -1), ys, xs, size)
        out.append(crops[tissue_mask(crops)] if tissue_only else crops)
    return torch.cat(out)[:count]


def multiscale_patches(count: int, size: int = PATCH, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[str]]:
    """`count` crops spread evenly over both images at every side in SIDES, black background included (the
    large-image path must regenerate it too); with the name of the source of each."""
    combos = [(name, side) for name, sides in SIDES.items() for side in sides]
    crops, names = [], []
    for i, (name, side) in enumerate(combos):
        n = count // len(combos) + (i < count % len(combos))
        crops.append(random_patches(name, n, size, generator, side=side, tissue_only=False))
        names += [name] * n
    return torch.cat(crops), names


def crop_batch(images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: int) -> torch.Tensor:
    """images[i, :, ys[i]:ys[i]+size, xs[i]:xs[i]+size] for every i, in one gather."""
    offsets = torch.arange(size)
    rows = (ys[:, None] + offsets)[:, None, :, None]
    cols = (xs[:, None] + offsets)[:, None, None, :]
    batch = torch.arange(len(images))[:, None, None, None]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    return images[batch, channels, rows, cols]


def quarter_turns(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image by turns[i] quarter turns (grouped, not looped per image)."""
    out = images.clone()
    for k in range(1, 4):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return out


def _dihedral(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    turns = torch.randint(0, 4, (len(patches),), generator=generator)
    flips = torch.rand(len(patches), generator=generator) < 0.5
    out = quarter_turns(patches, turns)
    out[flips] = out[flips].flip(-1)
    return out


def ihc_patches(resolution: int = PATCH, count: int = 24000, seed: int = 0) -> TensorImageDataset:
    """Patches of both images at every side in SIDES (background included), with flips and quarter turns;
    each carries its source's caption."""
    g = torch.Generator().manual_seed(seed)
    crops, names = multiscale_patches(count, PATCH, g)
    crops = _dihedral(crops, g)
    if resolution != PATCH:
        crops = F.interpolate(crops, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return TensorImageDataset(crops * 2 - 1, captions=[CAPTIONS[name][0] for name in names])


def embed_dense(embedder, name: str, stride: int = 8, batch_size: int = 512) -> torch.Tensor:
    """Embeddings of every PATCH x PATCH window at `stride` over a reference image: (D, rows, cols)."""
    image = reference_image(name)
    windows = image.unfold(1, PATCH, stride).unfold(2, PATCH, stride)  # (3, rows, cols, P, P)
    rows, cols = windows.shape[1:3]
    flat = windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, PATCH, PATCH)
    embeddings = embedder.embed_images(flat)
    return embeddings.reshape(rows, cols, -1).permute(2, 0, 1)


def whole_view_grid(embedder, name: str, grid: int, generator: torch.Generator) -> torch.Tensor:
    """The whole image shrunk to grid x PATCH pixels, mirrored at random, embedded as grid x grid non-overlapping
    patches: (D, grid, grid). No shift or scale: one view (and its mirror) per image is what a caption naming the
    whole image should draw every time; with shifts and 0.85-1.1 scales the grid model drew it for some seeds only."""
    side = grid * PATCH
    view = F.interpolate(reference_image(name)[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
    if float(torch.rand(1, generator=generator)) < 0.5:
        view = view.flip(-1)
    cells = view.unfold(1, PATCH, PATCH).unfold(2, PATCH, PATCH).permute(1, 2, 0, 3, 4).reshape(-1, 3, PATCH, PATCH)
    return embedder.embed_images(cells.contiguous()).reshape(grid, grid, -1).permute(2, 0, 1)


def embedding_grids(embedder, count: int = 4000, grid: int = GRID, stride: int = 8, seed: int = 0, whole: float = 0.5) -> tuple[torch.Tensor, list[str]]:
    """`count` random grid x grid embedding grids (patches PATCH apart) with captions naming their source; of
    each image with WHOLE_CAPTIONS, a fraction `whole` are views of the entire image (`whole_view_grid`),
    captioned as whole views, so a prompt such as "retina fundus photograph" draws the fundus entire."""
    g = torch.Generator().manual_seed(seed)
    step = PATCH // stride
    grids, captions = [], []
    for index, name in enumerate(("ihc", "retina")):
        dense = embed_dense(embedder, name, stride)
        _, rows, cols = dense.shape
        span = (grid - 1) * step + 1
        n = count // 2 if index == 0 else count - count // 2
        if name in WHOLE_CAPTIONS:
            views = int(round(n * whole))
            for _ in range(views):
                grids.append(whole_view_grid(embedder, name, grid, g))
                captions.append(WHOLE_CAPTIONS[name][int(torch.randint(0, len(WHOLE_CAPTIONS[name]), (1,), generator=g))])
            n -= views
        crop_captions = [c for c in CAPTIONS[name] if c not in WHOLE_CAPTIONS.get(name, ())] or CAPTIONS[name]
        kept = 0
        while kept < n:
            y = int(torch.randint(0, rows - span + 1, (1,), generator=g))
            x = int(torch.randint(0, cols - span + 1, (1,), generator=g))
            if name == "retina":  # keep grids whose corners are inside the fundus
                image = reference_image(name)
                top, left, size = y * stride, x * stride, (grid * PATCH)
                corners = image[:, [top + 4, top + size - 5], :][:, :, [left + 4, left + size - 5]]
                if corners.mean(dim=0).min() < 0.08:
                    continue
            grids.append(dense[:, y : y + span : step, x : x + span : step])
            choice = int(torch.randint(0, len(crop_captions), (1,), generator=g))
            captions.append(crop_captions[choice])
            kept += 1
    return torch.stack(grids), captions
