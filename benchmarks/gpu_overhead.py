"""gen on a GPU at real sizes, random weights, fp16: the loop's overhead over the stock pipelines, SVDD's
cost against M, and tiles against StableDiffusionPanoramaPipeline on the same views.

    python -m benchmarks.gpu_overhead [--device cuda] [--scale real|tiny] [--repeats 5] [--out DIR]

- overhead: steer(pipe) / stock wall time, paired and interleaved, for an SD-1.5-size UNet (860M) and a
  DiT-XL/2-size transformer (675M), 20 steps, CFG; outputs are compared for bit-equality.
- svdd: SVDD-PM (a cheap reward on the decoded x0) at M = 1, 4, 8, 20 over plain sampling, SD-1.5 size, 20
  steps, batch 1.
- panorama: gen's TiledDenoiser vs StableDiffusionPanoramaPipeline, SD-1.5-size UNet, 64x128 latents, the
  same 9 views (window 64, stride 8 -> MultiDiffusion's views), uniform blending.
`--scale tiny` runs the same code on tiny models (a smoke test on a CPU). Writes gpu_overhead.json + .png.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import add_output_argument, interval, pyplot, save


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def paired(a, b, repeats: int, device) -> dict:
    """Interleaved wall times of a and b, and their per-pair ratios a/b."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, device))
        tb.append(timed(b, device))
    ratios = [x / y for x, y in zip(ta, tb)]
    return {"a_s": ta, "b_s": tb, "ratio": ratios, "ratio_median": statistics.median(ratios), "ratio_ci95": interval(ratios)}


def sd_pipeline(scale: str, device, dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from gen import testing as tiny

    torch.manual_seed(0)
    unet = (
        UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        if scale == "real"
        else tiny.tiny_condition_unet(cross_attention_dim=768, sample_size=64)
    )
    # a tiny VAE with SD's factor 8 (four levels): StableDiffusionPanoramaPipeline assumes it
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        scaling_factor=0.18215,
    ).eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1),
    )
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    embeds = {
        "prompt_embeds": torch.randn(1, 77, 768, generator=g).to(device, dtype),
        "negative_prompt_embeds": torch.randn(1, 77, 768, generator=g).to(device, dtype),
    }
    return pipe, embeds


def dit_pipeline(scale: str, device, dtype):
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    from gen import testing as tiny

    torch.manual_seed(0)
    dit = (
        DiTTransformer2DModel(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000
        )
        if scale == "real"
        else tiny.tiny_dit()
    ).eval()  # a new model trains: label dropout
    pipe = DiTPipeline(transformer=dit, vae=tiny.tiny_vae(), scheduler=DDIMScheduler()).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def overhead(scale, device, dtype, repeats, steps) -> dict:
    from gen.pipelines import steer

    sd, embeds = sd_pipeline(scale, device, dtype)
    dit = dit_pipeline(scale, device, dtype)
    out = {}
    # DiTPipeline has no latent output: its images are compared (and timed with the tiny VAE's decode)
    for name, pipe, kwargs in (
        ("sd15", sd, dict(embeds, guidance_scale=7.5, output_type="latent")),
        ("dit_xl", dit, dict(class_labels=[207], guidance_scale=4.0, output_type="pt")),
    ):
        kwargs = dict(kwargs, num_inference_steps=steps)
        steered = steer(pipe)
        run_steer = lambda: steered(**kwargs, generator=torch.Generator().manual_seed(0)).images
        run_stock = lambda: pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
        row = paired(run_steer, run_stock, repeats, device)
        row["identical"] = bool(torch.equal(run_steer(), run_stock()))
        out[name] = row
        print(
            f"{name}: steer/stock {row['ratio_median']:.3f} (95% CI {row['ratio_ci95'][0]:.3f}-{row['ratio_ci95'][1]:.3f}), identical output: {row['identical']}"
        )
    return out


def svdd_cost(scale, device, dtype, repeats, steps, ms=(1, 4, 8, 20)) -> dict:
    from gen.guidance import SVDD, PosteriorMeanValue
    from gen.pipelines import steer

    pipe, embeds = sd_pipeline(scale, device, dtype)
    steered = steer(pipe)
    kwargs = dict(embeds, guidance_scale=7.5, num_inference_steps=steps, eta=1.0, output_type="latent")
    reward = lambda images: images.float().mean(dim=(1, 2, 3))
    plain = lambda: steered(**kwargs, generator=torch.Generator().manual_seed(0))
    rows = {}
    for m in ms:
        guided = lambda m=m: steered(**kwargs, generator=torch.Generator().manual_seed(0), hooks=[SVDD(PosteriorMeanValue(reward), num_candidates=m)])
        row = paired(guided, plain, repeats, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            guided()
            row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows[m] = row
        print(f"SVDD-PM M={m}: {row['ratio_median']:.2f}x plain (95% CI {row['ratio_ci95'][0]:.2f}-{row['ratio_ci95'][1]:.2f})")
    return rows


def panorama(scale, device, dtype, repeats, steps) -> dict:
    from diffusers.pipelines.deprecated.stable_diffusion_panorama import StableDiffusionPanoramaPipeline
    from diffusers.utils.torch_utils import randn_tensor

    from gen import Denoiser, sample
    from gen.core.tiling import TiledDenoiser

    sd, embeds = sd_pipeline(scale, device, dtype)
    window = sd.unet.config.sample_size  # 64 latent pixels: Panorama's default window, at its stride 8
    pano = StableDiffusionPanoramaPipeline(**{k: v for k, v in sd.components.items() if k != "image_encoder"})
    pano.set_progress_bar_config(disable=True)
    height, width = window * sd.vae_scale_factor, 2 * window * sd.vae_scale_factor
    batch = 9

    def stock():
        return pano(
            prompt_embeds=embeds["prompt_embeds"],
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=1.0,
            view_batch_size=batch,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )

    tiled = TiledDenoiser(Denoiser(sd.unet, sd.scheduler), tile=window, overlap=window - 8, tile_batch_size=batch, blend="uniform")  # as MultiDiffusion

    def ours():
        x = randn_tensor((1, 4, window, 2 * window), generator=torch.Generator().manual_seed(0), device=device, dtype=dtype)
        return sample(tiled, x, num_inference_steps=steps, cond={"encoder_hidden_states": embeds["prompt_embeds"]}, generator=torch.Generator().manual_seed(0))

    row = paired(ours, stock, repeats, device)
    row["views"] = len(pano.get_views(height, width))
    row["gen_tiles"] = len(tiled.positions(window, 2 * window))
    print(
        f"tiles / Panorama: {row['ratio_median']:.3f} (95% CI {row['ratio_ci95'][0]:.3f}-{row['ratio_ci95'][1]:.3f}); views {row['views']}, gen tiles {row['gen_tiles']}"
    )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", choices=["real", "tiny"], default=None, help="model sizes (default: real on CUDA, tiny on a CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    scale = args.scale or ("real" if device.type == "cuda" else "tiny")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    results = {
        "scale": scale,
        "dtype": str(dtype),
        "steps": args.steps,
        "repeats": args.repeats,
        "overhead": overhead(scale, device, dtype, args.repeats, args.steps),
        "svdd": svdd_cost(scale, device, dtype, args.repeats, args.steps),
        "panorama": panorama(scale, device, dtype, args.repeats, args.steps),
    }
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(results["overhead"]) + ["tiles vs Panorama"]
    rows = list(results["overhead"].values()) + [results["panorama"]]
    a.errorbar(
        range(len(rows)),
        [r["ratio_median"] for r in rows],
        yerr=[[r["ratio_median"] - r["ratio_ci95"][0] for r in rows], [r["ratio_ci95"][1] - r["ratio_median"] for r in rows]],
        fmt="o",
        capsize=3,
    )
    a.axhline(1.0, ls="--", color="gray")
    a.set_xticks(range(len(rows)), names)
    a.set_ylabel("gen / stock wall time")
    ms = list(results["svdd"])
    b.errorbar(ms, [results["svdd"][m]["ratio_median"] for m in ms], fmt="o-", capsize=3, label="SVDD-PM / plain")
    b.plot(ms, ms, ls="--", color="gray", label="M")
    b.set_xlabel("candidates M")
    b.set_ylabel("wall time / plain")
    b.legend(fontsize=8)
    save("gpu_overhead" if device.type == "cuda" else f"gpu_overhead_{device.type}_{scale}", results, fig, out=args.out, device=device)
    return results


if __name__ == "__main__":
    main()
