"""gen's loop vs the stock pipeline: same components, steps and seeds; runs interleaved.

    python -m benchmarks.overhead [--repeats 15]

Each repeat runs stock then gen back to back; the ratio reported is the median of the per-pair ratios
(drift and other load hit both runs of a pair alike). Target: wall-time ratio gen/stock <= 1.02. Writes results/overhead.json and overhead.png.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDIMPipeline, DDIMScheduler, DiTPipeline, UNet2DModel

from benchmarks.common import add_output_argument, interleaved, median, pyplot, save
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


CASES = {
    "DDIMPipeline (UNet 32x32, batch 4, 20 steps)": (unet_pipeline, dict(batch_size=4, num_inference_steps=20, output_type="np")),
    "DiTPipeline (tiny DiT + VAE, CFG, 20 steps)": (dit_pipeline, dict(class_labels=[1, 2, 3, 4], num_inference_steps=20, guidance_scale=4.0, output_type="np")),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    rows = {}
    for name, (build, kwargs) in CASES.items():
        pipe = build()
        steered = steer(pipe)
        times = interleaved(
            {
                "stock": lambda: pipe(generator=torch.Generator().manual_seed(0), **kwargs),
                "gen": lambda: steered(generator=torch.Generator().manual_seed(0), **kwargs),
            },
            repeats=args.repeats,
        )
        ratio = median([g / s for g, s in zip(times["gen"], times["stock"])])
        rows[name] = {"stock_s": times["stock"], "gen_s": times["gen"], "median_ratio": ratio, "target": 1.02, "meets_target": ratio <= 1.02}
        print(f"{name}: stock {median(times['stock']):.4f}s  gen {median(times['gen']):.4f}s  ratio {ratio:.3f}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
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
