"""What tiling costs beyond the backbone: a large image's time over the time of the same number of plain
backbone rows at the same batch size, side by side in one run; and peak memory against image size.

    python -m benchmarks.tiling_overhead [--sizes 256 512 1024] [--steps 2] [--tile-batch 64] [--repeats 5]
    python -m benchmarks.tiling_overhead --device cuda --sizes 1024 2048 4096 --tile-batch 1024

The model is the zoo's 32x32 `ihc-patches`, unguided (guidance_scale 1 overrides its saved 2, so rows =
tiles x steps). "plain" evaluates the same rows through the same Denoiser in batches of --tile-batch, with
nothing else: no gathering, no conditions per tile, no fusion. Targets (issue 12): ratio <= 1.15 on CPU and on GPU; peak memory beyond
the canvas flat in image size; a 4096x4096 image (2 steps) >= 8x faster on the GPU than the 89 s measured
before the tiling was vectorised. Writes tiling_overhead[_cuda].json + .png into --out.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import add_output_argument, interval, pyplot, save


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def measure(pipe, size: int, steps: int, tile_batch: int, repeats: int) -> dict:
    from gen.core.denoiser import Denoiser
    from gen.core.tiling import tile_starts

    device, dtype = pipe.unet.device, pipe.unet.dtype
    cells = size // 32
    grid = torch.randn(cells, cells, pipe.embedding_width, generator=torch.Generator().manual_seed(0))
    grid = grid / grid.norm(dim=-1, keepdim=True) * pipe.embedding_width**0.5
    overlap = 8

    def large():
        return pipe(
            embedding_grid=grid,
            overlap=overlap,
            tile_batch_size=tile_batch,
            num_inference_steps=steps,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )

    tiles = len(tile_starts(size, 32, 32 - overlap)) ** 2
    den = Denoiser(pipe.unet, pipe.scheduler)
    pipe.scheduler.set_timesteps(steps)
    rows = tiles
    x = torch.randn(min(tile_batch, rows), 3, 32, 32, device=device, dtype=dtype)
    e = torch.randn(min(tile_batch, rows), pipe.embedding_width, device=device, dtype=dtype)
    # the condition may nest (the UNet's added_cond_kwargs), so build it for each batch size used
    conds = {n: den.backbone.embedding_condition(e[:n]) for n in {min(tile_batch, rows - s) for s in range(0, rows, tile_batch)}}

    @torch.no_grad()
    def plain():
        for t in pipe.scheduler.timesteps:
            for start in range(0, rows, tile_batch):
                n = min(tile_batch, rows - start)
                den(x[:n], t, cond=conds[n])

    large(), plain()  # warm-up
    times = {"large": [], "plain": []}
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for name, fn in (("large", large), ("plain", plain)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    _peak_reset(device)
    large()
    ratios = [a / b for a, b in zip(times["large"], times["plain"])]
    canvas_mb = 3 * size * size * torch.finfo(dtype).bits / 8 / 2**20
    return {
        "size": size,
        "tiles": tiles,
        "steps": steps,
        "tile_batch": tile_batch,
        "large_s": times["large"],
        "plain_s": times["plain"],
        "ratio": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_ci95": interval(ratios),
        "peak_mb": _peak_mb(device),
        "canvas_mb": canvas_mb,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tile-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    add_output_argument(parser)
    args = parser.parse_args(argv)

    import gen.zoo as zoo
    from gen.pipelines import LargeImagePipeline

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    pipe = LargeImagePipeline.from_pipe(zoo.load("ihc-patches", dtype=dtype, device=device))
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for size in args.sizes:
        row = measure(pipe, size, args.steps, args.tile_batch, args.repeats)
        rows.append(row)
        low, high = row["ratio_ci95"]
        print(
            f"{size}x{size}: {row['tiles']} tiles, large {statistics.median(row['large_s']):.2f}s vs plain rows {statistics.median(row['plain_s']):.2f}s: "
            f"ratio {row['ratio_median']:.3f} (95% CI {low:.3f}-{high:.3f})" + (f", peak {row['peak_mb']:.0f} MB" if row["peak_mb"] else "")
        )
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    sizes = [r["size"] for r in rows]
    a.errorbar(
        sizes,
        [r["ratio_median"] for r in rows],
        yerr=[[r["ratio_median"] - r["ratio_ci95"][0] for r in rows], [r["ratio_ci95"][1] - r["ratio_median"] for r in rows]],
        marker="o",
        capsize=3,
    )
    a.axhline(1.15, ls="--", color="gray", label="target 1.15")
    a.set_xscale("log", base=2)
    a.set_xlabel("image side (px)")
    a.set_ylabel("large image / plain rows")
    a.legend(fontsize=8)
    if rows[0]["peak_mb"] is not None:
        b.plot(sizes, [r["peak_mb"] - r["canvas_mb"] for r in rows], marker="o", label="peak allocated beyond one canvas")
        b.set_xscale("log", base=2)
        b.set_xlabel("image side (px)")
        b.set_ylabel("MB")
        b.legend(fontsize=8)
    name = "tiling_overhead" + ("" if device.type == "cpu" else f"_{device.type}")
    save(
        name,
        {"steps": args.steps, "tile_batch": args.tile_batch, "repeats": args.repeats, "dtype": args.dtype, "sizes": rows},
        fig,
        out=args.out,
        device=device,
    )
    return rows


if __name__ == "__main__":
    main()
