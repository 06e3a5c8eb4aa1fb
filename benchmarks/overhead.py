"""gen's loop vs the stock pipeline: same components, steps and seeds; runs interleaved.

    python -m benchmarks.overhead [--repeats 15] [--only SUBSTRING]

One case per family `steer` supports, each on the tiny components of `gen.testing` (for the modern families
the stock call itself runs, with gen's loop inside it: the cost measured is the probe, the handover and the
loop), 20 steps.

Each repeat runs stock then gen back to back; the ratio reported is the median of the per-pair ratios
(drift and other load hit both runs of a pair alike). Target: wall-time ratio gen/stock <= 1.02. Writes results/overhead.json and overhead.png.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDIMPipeline, DDIMScheduler, DiTPipeline, UNet2DModel

from benchmarks.common import add_output_argument, interleaved, interval, median, pyplot, save
from gen import testing as tiny
from gen.pipelines import steer


def unet_pipeline() -> DDIMPipeline:
    """A small pixel UNet (32x32, 3 levels): enough work per step that the loop's own cost shows as a ratio."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
    ).eval()
    pipe = DDIMPipeline(unet, DDIMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dit_pipeline() -> DiTPipeline:
    return tiny.dit_pipeline(DDIMScheduler(num_train_timesteps=1000))


STEPS = dict(num_inference_steps=20, output_type="np")
CASES = {
    "DDIMPipeline (UNet 32x32, batch 4, 20 steps)": (unet_pipeline, dict(batch_size=4, num_inference_steps=20, output_type="np")),
    "DiTPipeline (tiny DiT + VAE, CFG, 20 steps)": (
        dit_pipeline,
        dict(class_labels=[1, 2, 3, 4], num_inference_steps=20, guidance_scale=4.0, output_type="np"),
    ),
    "StableDiffusionXLPipeline (tiny, CFG)": (tiny.sdxl_pipeline, dict(prompt=["a cat"] * 2, height=32, width=32, guidance_scale=5.0, **STEPS)),
    "StableDiffusionXLImg2ImgPipeline (tiny, strength 1, CFG)": (
        lambda: tiny.sdxl_pipeline(cls=__import__("diffusers").StableDiffusionXLImg2ImgPipeline),
        dict(prompt=["a cat"] * 2, image=torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), strength=1.0, guidance_scale=5.0, **STEPS),
    ),
    "FluxPipeline (tiny, guidance embedded)": (
        lambda: tiny.flux_pipeline(guidance_embeds=True),
        dict(prompt=["a cat"] * 2, height=32, width=32, max_sequence_length=16, **STEPS),
    ),
    "SanaPipeline (tiny, CFG)": (tiny.sana_pipeline, dict(height=64, width=64, use_resolution_binning=False, **tiny.sana_prompt(2), **STEPS)),
    "PixArtSigmaPipeline (tiny, CFG)": (tiny.pixart_sigma_pipeline, dict(height=32, width=32, use_resolution_binning=False, **tiny.pixart_prompt(2), **STEPS)),
    "Lumina2Pipeline (tiny, CFG)": (tiny.lumina2_pipeline, dict(height=32, width=32, **tiny.pixart_prompt(2), **STEPS)),
    "AuraFlowPipeline (tiny, CFG)": (tiny.auraflow_pipeline, dict(height=32, width=32, **tiny.pixart_prompt(2), **STEPS)),
    "QwenImagePipeline (tiny, true CFG)": (tiny.qwen_image_pipeline, dict(height=64, width=64, true_cfg_scale=4.0, **tiny.qwen_prompt(2), **STEPS)),
    "ZImagePipeline (tiny, CFG)": (tiny.z_image_pipeline, dict(height=64, width=64, **tiny.z_image_prompt(2), **STEPS)),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    add_output_argument(parser)
    args = parser.parse_args(argv)
    rows = {}
    for name, (build, kwargs) in CASES.items():
        if args.only not in name:
            continue
        pipe = build()
        steered = steer(pipe)
        times = interleaved(
            {
                "stock": lambda: pipe(generator=torch.Generator().manual_seed(0), **kwargs),
                "gen": lambda: steered(generator=torch.Generator().manual_seed(0), **kwargs),
            },
            repeats=args.repeats,
        )
        ratios = [g / s for g, s in zip(times["gen"], times["stock"])]
        ratio, low_high = median(ratios), interval(ratios)
        rows[name] = {
            "stock_s": times["stock"],
            "gen_s": times["gen"],
            "median_ratio": ratio,
            "mean_ratio_95": low_high,
            "target": 1.02,
            "meets_target": ratio <= 1.02,
        }
        print(f"{name}: stock {median(times['stock']):.4f}s  gen {median(times['gen']):.4f}s  ratio {ratio:.3f} (mean 95% {low_high[0]:.3f}-{low_high[1]:.3f})")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 1 + 0.4 * len(rows)))
    names = list(rows)
    ax.barh(range(len(names)), [rows[n]["median_ratio"] for n in names], color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.axvline(1.02, color="tab:red", ls="--", lw=0.8, label="target 1.02")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("median of paired wall-time ratios, gen / stock")
    ax.set_xlim(0.9, max(1.1, max(r["median_ratio"] for r in rows.values()) + 0.02))
    ax.legend(fontsize=8)
    result = {"repeats": args.repeats, "cases": rows}
    save("overhead", result, fig, out=args.out)
    return result


if __name__ == "__main__":
    main()
