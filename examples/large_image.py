"""Regenerate a real retina photograph, at any size, from its self-supervised patch embeddings (Graikos et
al. 2024), one per tile position, with the zoo `ihc-patches` model and overlapping tiles fused at every step.

    python examples/large_image.py --size 512 --overlap 8 --guidance 2 --steps 10 --out out/examples
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gen import zoo
from gen.demo import grid_image
from gen.io import save_image, write_json
from gen.pipelines import LargeImagePipeline
from gen.data.tissue import reference_image


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["retina", "ihc"], default="retina", help="the scikit-image picture to use as reference")
    parser.add_argument("--size", type=int, default=512, help="reference and output side in pixels (the model saw the 1024-pixel retina)")
    parser.add_argument("--overlap", type=int, default=8, help="pixels shared by neighbouring 32-pixel tiles")
    parser.add_argument(
        "--grid-stride", type=int, default=None, help="pixels between the reference's embedded crops (default: the tiles' stride, one embedding per tile)"
    )
    parser.add_argument("--blend", choices=["cosine", "uniform"], default="cosine")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's saved one)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tile-batch", type=int, default=32, help="tiles per backbone call: bounds activation memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/examples")
    args = parser.parse_args(argv)

    large = LargeImagePipeline.from_pipe(zoo.load("ihc-patches"))
    image = reference_image(args.source)
    side = min(image.shape[1:])
    reference = F.interpolate(image[None, :, :side, :side], size=(args.size, args.size), mode="bilinear", antialias=True) if side != args.size else image[None]
    start = time.perf_counter()
    out = large(
        reference=reference,
        overlap=args.overlap,
        grid_stride=args.grid_stride,
        blend=args.blend,
        guidance_scale=args.guidance,
        num_inference_steps=args.steps,
        tile_batch_size=args.tile_batch,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
    )
    summary = {"size": list(out.images.shape[2:]), "grid": list(out.grid.shape), "tiles": out.tiles, "nfe": out.nfe, "seconds": time.perf_counter() - start}
    folder = Path(args.out)
    save_image(folder / "large_image.png", grid_image(torch.cat([reference, out.images]), 2))
    write_json(folder / "large_image.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
