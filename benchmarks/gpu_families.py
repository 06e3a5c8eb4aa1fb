"""steer on the modern families at real size, random weights, bfloat16 (issue 26): SDXL (2.6B UNet, 1024²) and
Flux (12B transformer, 1024², guidance-distilled), steer(pipe) vs the stock pipeline, and SVDD-PM's cost
against the number of candidates M.

    python -m benchmarks.gpu_families [--device cuda] [--scale real|tiny] [--repeats 3] [--out DIR]

- overhead: paired, interleaved wall times of steer vs stock, SDXL 20 steps with CFG, Flux 4 steps; outputs
  are compared for bit-equality.
- svdd: SVDD-PM with a cheap reward on the decoded x0 (mean intensity) at M = 1, 2, 4 over plain sampling
  (SDXL on Euler ancestral, 10 steps; Flux with stochastic flow sampling, 4 steps), with peak memory.
Text encoders are left out (prompt embeddings of the real widths are drawn at random): what is measured is
the denoising loop. `--scale tiny` runs the same code on gen.testing's tiny models (a smoke test on a CPU).
Writes gpu_families.json + .png (gpu_families_cpu_tiny.* on a CPU).
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from benchmarks.common import add_output_argument, pyplot, save
from benchmarks.gpu_overhead import paired


@contextlib.contextmanager
def _built_in(device, dtype):
    """Parameters created on the device in the target dtype (a 12B model never exists in float32)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(default)


def sdxl(scale: str, device, dtype):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from gen import testing as tiny

    torch.manual_seed(0)
    if scale == "tiny":
        pipe, size, text, pooled = tiny.sdxl_pipeline(), 16, 2 * tiny.TEXT_WIDTH, tiny.TEXT_WIDTH
        pipe.text_encoder = pipe.text_encoder_2 = None
    else:
        with _built_in(device, dtype):
            unet = UNet2DConditionModel(
                sample_size=128,
                layers_per_block=2,
                block_out_channels=(320, 640, 1280),
                transformer_layers_per_block=(1, 2, 10),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048,
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816,
            )
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                latent_channels=4,
                layers_per_block=2,
                scaling_factor=0.13025,
                sample_size=1024,
            )
        scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading")
        pipe = StableDiffusionXLPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None)
        size, text, pooled = 1024, 2048, 1280
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    embeds = {
        name: torch.randn(*shape, generator=g).to(device, dtype)
        for name, shape in (
            ("prompt_embeds", (1, 77, text)),
            ("negative_prompt_embeds", (1, 77, text)),
            ("pooled_prompt_embeds", (1, pooled)),
            ("negative_pooled_prompt_embeds", (1, pooled)),
        )
    }
    return pipe, dict(embeds, height=size, width=size, guidance_scale=5.0)


def flux(scale: str, device, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from gen import testing as tiny

    torch.manual_seed(0)
    if scale == "tiny":
        pipe, size, text, pooled, tokens = tiny.flux_pipeline(guidance_embeds=True), 16, tiny.TEXT_WIDTH, tiny.TEXT_WIDTH, 8
    else:
        with _built_in(device, dtype):
            transformer = FluxTransformer2DModel(
                patch_size=1,
                in_channels=64,
                num_layers=19,
                num_single_layers=38,
                attention_head_dim=128,
                num_attention_heads=24,
                joint_attention_dim=4096,
                pooled_projection_dim=768,
                guidance_embeds=True,
                axes_dims_rope=(16, 56, 56),
            )
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                latent_channels=16,
                layers_per_block=2,
                scaling_factor=0.3611,
                shift_factor=0.1159,
                use_quant_conv=False,
                use_post_quant_conv=False,
            )
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
        pipe = FluxPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
        size, text, pooled, tokens = 1024, 4096, 768, 512
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    embeds = {
        "prompt_embeds": torch.randn(1, tokens, text, generator=g).to(device, dtype),
        "pooled_prompt_embeds": torch.randn(1, pooled, generator=g).to(device, dtype),
    }
    return pipe, dict(embeds, height=size, width=size, guidance_scale=3.5)


def overhead(name, pipe, kwargs, steps, repeats, device) -> dict:
    from gen.pipelines import steer

    kwargs = dict(kwargs, num_inference_steps=steps, output_type="latent")
    steered = steer(pipe)
    run_steer = lambda: steered(**kwargs, generator=torch.Generator().manual_seed(0)).images
    run_stock = lambda: pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    row = paired(run_steer, run_stock, repeats, device)
    row["identical"] = bool(torch.equal(run_steer(), run_stock()))
    print(f"{name}: steer/stock {row['ratio_median']:.3f} (95% CI {row['ratio_ci95'][0]:.3f}-{row['ratio_ci95'][1]:.3f}), identical output: {row['identical']}")
    return row


def svdd_cost(name, pipe, kwargs, stochastic, steps, repeats, device, ms=(1, 2, 4)) -> dict:
    from gen.guidance import SVDD, PosteriorMeanValue
    from gen.pipelines import steer

    steered = steer(pipe)
    original = steered.scheduler
    steered.scheduler = stochastic(original)
    kwargs = dict(kwargs, num_inference_steps=steps, output_type="latent")
    reward = lambda images: images.float().mean(dim=(1, 2, 3))
    plain = lambda: steered(**kwargs, generator=torch.Generator().manual_seed(0))
    rows = {}
    for m in ms:
        guided = lambda m=m: steered(**kwargs, generator=torch.Generator().manual_seed(0), hooks=[SVDD(PosteriorMeanValue(reward), num_candidates=m)])
        row = paired(guided, plain, repeats, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            row["nfe"] = guided().nfe
            row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows[m] = row
        print(f"{name} SVDD-PM M={m}: {row['ratio_median']:.2f}x plain (95% CI {row['ratio_ci95'][0]:.2f}-{row['ratio_ci95'][1]:.2f})")
    steered.scheduler = original
    return rows


def main(argv=None):
    from diffusers import EulerAncestralDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", choices=["real", "tiny"], default=None, help="model sizes (default: real on CUDA, tiny on a CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", nargs="+", default=["sdxl", "flux"], choices=["sdxl", "flux"])
    add_output_argument(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    scale = args.scale or ("real" if device.type == "cuda" else "tiny")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    plans = {
        "sdxl": (sdxl, 20, 10, lambda s: EulerAncestralDiscreteScheduler.from_config(s.config)),
        "flux": (flux, 4, 4, lambda s: FlowMatchEulerDiscreteScheduler.from_config(s.config, stochastic_sampling=True)),
    }
    results = {"scale": scale, "dtype": str(dtype), "repeats": args.repeats, "overhead": {}, "svdd": {}}
    for name in args.families:
        build, steps, svdd_steps, stochastic = plans[name]
        pipe, kwargs = build(scale, device, dtype)
        results["overhead"][name] = overhead(name, pipe, kwargs, steps, args.repeats, device)
        results["svdd"][name] = svdd_cost(name, pipe, kwargs, stochastic, svdd_steps, args.repeats, device)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(results["overhead"])
    rows = [results["overhead"][n] for n in names]
    a.errorbar(
        range(len(rows)),
        [r["ratio_median"] for r in rows],
        yerr=[[r["ratio_median"] - r["ratio_ci95"][0] for r in rows], [r["ratio_ci95"][1] - r["ratio_median"] for r in rows]],
        fmt="o",
        capsize=3,
    )
    a.axhline(1.0, ls="--", color="gray")
    a.set_xticks(range(len(rows)), names)
    a.set_ylabel("steer / stock wall time")
    for name in names:
        ms = list(results["svdd"][name])
        b.errorbar(ms, [results["svdd"][name][m]["ratio_median"] for m in ms], fmt="o-", capsize=3, label=f"{name}: SVDD-PM / plain")
    b.set_xlabel("candidates M")
    b.set_ylabel("wall time / plain")
    b.legend(fontsize=8)
    save("gpu_families" if device.type == "cuda" else f"gpu_families_{device.type}_{scale}", results, fig, out=args.out, device=device)
    return results


if __name__ == "__main__":
    main()
