"""Large images: time and peak memory against output size, and the time against diffusers'
StableDiffusionPanoramaPipeline (MultiDiffusion) on the same tiny components at the same overlap.

    python -m benchmarks.large_image [--sizes 256 512 1024 2048] [--steps 2]

Each size runs in its own process so its peak RSS is its own. Targets: time per pixel flat across sizes;
memory beyond the canvas flat (activations are bounded by the tile batch). Writes
results/large_image.json and .png.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from benchmarks.common import add_output_argument, interleaved, median, pyplot, save


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_size(size: int, steps: int, tile_batch: int) -> dict:
    """Run in a fresh process: load, build a grid, generate size x size; report time and peak RSS."""
    from diffusers import DDIMScheduler

    from gen import zoo
    from gen.pipelines import LargeImagePipeline
    from gen.data.tissue import reference_image

    pipe = LargeImagePipeline.from_pipe(zoo.load("ihc-patches"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    small = torch.nn.functional.interpolate(reference_image("retina")[None], size=(256, 256), mode="bilinear", antialias=True)
    tile_grid = pipe.embed_grid(small)  # (8, 8, D), tiled to the requested size
    cells = size // 32
    grid = tile_grid.repeat((cells + 7) // 8, (cells + 7) // 8, 1)[:cells, :cells]
    baseline = _rss_mb()
    start = time.perf_counter()
    out = pipe(
        embedding_grid=grid, overlap=4, tile_batch_size=tile_batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    seconds = time.perf_counter() - start
    peak = _rss_mb()
    canvas_mb = 3 * size * size * 4 / 2**20
    return {
        "size": size,
        "seconds": seconds,
        "seconds_per_megapixel": seconds / (size * size / 1e6),
        "tiles": out.tiles,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "growth_mb": peak - baseline,
        "canvas_mb": canvas_mb,
        "growth_per_canvas": (peak - baseline) / canvas_mb,
    }


def panorama_comparison(steps: int, repeats: int) -> dict:
    """MultiDiffusion (stock Panorama) vs gen's TiledDenoiser in the same loop: a tiny text UNet with a
    factor-8 VAE, 64x64-latent windows at stride 8 (Panorama's fixed views), a 512x1024 panorama."""
    from diffusers import DDIMScheduler
    from diffusers.pipelines.deprecated.stable_diffusion_panorama import StableDiffusionPanoramaPipeline
    from diffusers.utils.torch_utils import randn_tensor

    from gen import Denoiser, sample
    from gen import testing as tiny
    from gen.core.tiling import TiledDenoiser

    tokenizer, encoder = tiny.tiny_text_encoder(max_length=77)
    vae = tiny.tiny_vae()
    vae = type(vae)(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).eval()
    unet = tiny.tiny_condition_unet(sample_size=64)
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    pano = StableDiffusionPanoramaPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pano.set_progress_bar_config(disable=True)
    embeds = pano.encode_prompt("a panorama", "cpu", 1, False)[0]
    batch = 16

    def stock():
        return pano(
            prompt_embeds=embeds,
            height=512,
            width=1024,
            num_inference_steps=steps,
            guidance_scale=1.0,
            view_batch_size=batch,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )

    tiled = TiledDenoiser(Denoiser(unet, scheduler), tile=64, overlap=56, tile_batch_size=batch, blend="uniform")  # as MultiDiffusion

    def ours():
        x = randn_tensor((1, 4, 64, 128), generator=torch.Generator().manual_seed(0))
        return sample(tiled, x, num_inference_steps=steps, cond={"encoder_hidden_states": embeds}, generator=torch.Generator().manual_seed(0))

    views = len(pano.get_views(512, 1024))
    times = interleaved({"panorama": stock, "gen": ours}, repeats=repeats)
    return {
        "views": views,
        "gen_tiles": len(tiled.positions(64, 128)),
        "steps": steps,
        "view_batch_size": batch,
        "panorama_s": times["panorama"],
        "gen_s": times["gen"],
        "ratio_gen_over_panorama": median(times["gen"]) / median(times["panorama"]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tile-batch", type=int, default=32)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.steps, args.tile_batch)))
        return None
    rows = []
    for size in args.sizes:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.large_image", "--one", str(size), "--steps", str(args.steps), "--tile-batch", str(args.tile_batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{size}x{size}: {row['seconds']:.1f}s ({row['seconds_per_megapixel']:.1f} s/MP), peak RSS {row['peak_rss_mb']:.0f} MB (+{row['growth_mb']:.0f} MB, canvas {row['canvas_mb']:.0f} MB)"
        )
    comparison = panorama_comparison(args.steps, args.repeats)
    print(f"gen / StableDiffusionPanoramaPipeline wall time: {comparison['ratio_gen_over_panorama']:.3f} ({comparison['views']} views)")
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    mp = [r["size"] ** 2 / 1e6 for r in rows]
    a.plot(mp, [r["seconds_per_megapixel"] for r in rows], marker="o")
    a.set_xscale("log")
    a.set_xlabel("megapixels")
    a.set_ylabel("seconds per megapixel")
    a.set_ylim(bottom=0)
    b.plot(mp, [r["growth_mb"] for r in rows], marker="o", label="peak RSS growth")
    b.plot(mp, [r["canvas_mb"] for r in rows], marker="x", ls="--", label="one canvas (float32)")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("megapixels")
    b.set_ylabel("MB")
    b.legend(fontsize=8)
    save("large_image", {"steps": args.steps, "tile_batch": args.tile_batch, "overlap": 4, "sizes": rows, "panorama": comparison}, fig, out=args.out)
    return rows


if __name__ == "__main__":
    main()
