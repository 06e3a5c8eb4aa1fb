"""How much of a reference can a model that draws a plausible patch for an embedding put back? A retrieval
reference point for benchmarks.large_image_fidelity.

    python -m benchmarks.retrieval_ceiling [--sizes 512 1024] [--images retina ihc] [--encoder zoo:patch-encoder PATH ...] [--out DIR]

Each non-overlapping 32-px cell of the reference is replaced by the real crop of the same image (every 4
pixels, any crop overlapping the cell excluded) that is nearest to it in a representation: the encoder's
embedding (cosine), raw pixels (L2: the closest real crop from elsewhere), or a random cell (shuffled). A
model that draws a real-looking patch matching an embedding does about what the embedding's neighbour does;
measured as in benchmarks.large_image_fidelity (patch cosine under the zoo encoder; vesselness correlation
inside the retina's fundus), the mosaics show how much of the layout matching the embedding can give and how
much the closest real crop gives. Not a strict bound: overlapping tiles conditioned at every position add
continuity between cells that a mosaic lacks. Deterministic (no sampling, so no seeds): one value per image,
size and representation. Writes retrieval_ceiling.json and a PNG of the retina's mosaics.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import add_output_argument, pyplot, save
from gen.analysis import fidelity

PATCH, BANK_STRIDE = 32, 4


def crops(image: torch.Tensor, patch: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All patch x patch crops of a (1, 3, H, W) image `stride` apart: (N, 3, patch, patch) and their corners (N, 2)."""
    tiles = image[0].unfold(1, patch, stride).unfold(2, patch, stride)
    rows, cols = tiles.shape[1:3]
    corners = torch.stack(torch.meshgrid(torch.arange(rows) * stride, torch.arange(cols) * stride, indexing="ij"), -1).reshape(-1, 2)
    return tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, patch, patch), corners


def overlapping(cell_corners: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """(cells, crops) mask of the crops that share a pixel with each cell: the candidates a cell may not take."""
    return ((cell_corners[:, None] - corners[None]).abs() < PATCH).all(dim=-1)


def mosaic(reference: torch.Tensor, chosen: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """The reference's cells, row-major, replaced by bank[chosen]."""
    cols = reference.shape[3] // PATCH
    out = reference.clone()
    for k, index in enumerate(chosen.tolist()):
        y, x = (k // cols) * PATCH, (k % cols) * PATCH
        out[0, :, y : y + PATCH, x : x + PATCH] = bank[index]
    return out


def nearest(queries: torch.Tensor, keys: torch.Tensor, excluded: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        distance = 1 - F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T
    else:
        distance = torch.cdist(queries, keys)
    return distance.masked_fill(excluded, float("inf")).argmin(dim=1)


def ceiling(reference: torch.Tensor, encoders: dict, judge, vessels: bool) -> tuple[dict, dict]:
    bank, corners = crops(reference, PATCH, BANK_STRIDE)
    cells, cell_corners = crops(reference, PATCH, PATCH)
    excluded = overlapping(cell_corners, corners)
    grid = judge.embed_images(cells).float().reshape(reference.shape[2] // PATCH, reference.shape[3] // PATCH, -1)
    with torch.no_grad():
        choices = {
            f"{name} embedding": nearest(encoder.embed_images(cells).float(), encoder.embed_images(bank).float(), excluded, "cosine")
            for name, encoder in encoders.items()
        }
        choices["pixels"] = nearest(cells.flatten(1), bank.flatten(1), excluded, "l2")
    # shuffled: the image's own cells in a fixed random order
    cell_in_bank = (corners[None] == cell_corners[:, None]).all(dim=-1).float().argmax(dim=1)
    choices["shuffled cells"] = cell_in_bank[torch.randperm(len(cells), generator=torch.Generator().manual_seed(0))]
    rows, mosaics = {}, {}
    for name, chosen in choices.items():
        mosaics[name] = mosaic(reference, chosen, bank)
        row = {"patch_cosine": fidelity.patch_cosine(judge, mosaics[name], grid).mean().item()}
        if vessels:
            row["vesselness_correlation"] = fidelity.vesselness_correlation(reference, mosaics[name])
        rows[name] = row
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    return rows, mosaics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--images", nargs="+", default=["retina", "ihc"], choices=["ihc", "retina"])
    parser.add_argument("--encoder", nargs="+", default=["zoo:patch-encoder"], help="embedders to retrieve with (gen.embedders.load_embedder sources)")
    add_output_argument(parser)
    args = parser.parse_args(argv)

    from gen.data.tissue import reference_image
    from gen.demo import grid_image
    from gen.embedders import load_embedder

    judge = load_embedder("zoo:patch-encoder")
    encoders = {source: load_embedder(source) for source in args.encoder}
    results, shown = {}, None
    for name in args.images:
        for size in args.sizes:
            print(f"{name}-{size}", flush=True)
            reference = reference_image(name, size)[None]
            results[f"{name}-{size}"], mosaics = ceiling(reference, encoders, judge, vessels=name == "retina")
            if name == "retina" and shown is None:
                shown = grid_image(torch.cat([reference, *mosaics.values()]), 2 + len(encoders) + 1, gap=8)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4 * (3 + len(encoders)), 4.5))
    if shown is not None:
        ax.imshow(shown)
        ax.axis("off")
        ax.set_title("reference | " + " | ".join([*(f"{s} embedding" for s in encoders), "pixels", "shuffled cells"]) + " (nearest real crops)", fontsize=9)
    save("retrieval_ceiling", {"patch": PATCH, "bank_stride": BANK_STRIDE, "encoders": args.encoder, "runs": results}, fig, out=args.out)
    return results


if __name__ == "__main__":
    main()
