"""Which sampler, step count and guidance scale should `ihc-patches` save as its defaults?

    python -m benchmarks.patch_sampling [--guidance 1 2 3 4] [--samplers ddpm ddim] [--steps 20] [--seeds 0 1 2]

Regenerates two 192x192 crops of the 512x512 references from their own embedding grids (the retina's
corner: black background, the fundus rim and vessels; the middle of the IHC slide) with every combination,
and reports the fidelity measures of benchmarks/large_image_fidelity.py with 95% intervals over seeds.
The defaults saved in gen/zoo/recipes.py (IHC_PATCHES_SAMPLING) are the combination this picks; the
full-size figures come from benchmarks/large_image_fidelity.py with those defaults.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import add_output_argument, pyplot, save
from benchmarks.large_image_fidelity import measures, summarise

CROPS = {"retina": (slice(160, 352), slice(0, 192)), "ihc": (slice(160, 352), slice(160, 352))}
SAMPLERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler"}
REPORTED = ("patch_cosine", "background_gap", "vesselness_correlation", "seam_strength")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_output_argument(parser)
    args = parser.parse_args(argv)

    import diffusers

    import gen.zoo as zoo
    from gen.data.tissue import reference_image
    from gen.pipelines import LargeImagePipeline

    pipe = LargeImagePipeline.from_pipe(zoo.load("ihc-patches"))
    pipe.set_progress_bar_config(disable=True)
    saved_scheduler = pipe.scheduler
    overlap = pipe.tile_size // 4
    references = {name: reference_image(name, 512)[None][(slice(None), slice(None), *CROPS[name])] for name in CROPS}
    grids = {name: pipe.embed_grid(image) for name, image in references.items()}
    runs = []
    for sampler in args.samplers:
        pipe.scheduler = getattr(diffusers, SAMPLERS[sampler]).from_config(saved_scheduler.config)
        for steps in args.steps:
            for guidance in args.guidance:
                row = {"sampler": sampler, "steps": steps, "guidance_scale": guidance}
                for name, reference in references.items():
                    values, start = [], time.perf_counter()
                    for seed in args.seeds:
                        out = pipe(
                            embedding_grid=grids[name],
                            guidance_scale=guidance,
                            num_inference_steps=steps,
                            generator=torch.Generator().manual_seed(seed),
                            output_type="pt",
                        ).images.float()
                        values.append(measures(pipe, reference, out, grids[name], overlap))
                    row[name] = {k: summarise([v.get(k) for v in values]) for k in REPORTED}
                    row[name] = {k: v for k, v in row[name].items() if v}
                    row[name]["seconds_per_image"] = (time.perf_counter() - start) / len(args.seeds)
                runs.append(row)
                print(
                    f"{sampler} {steps} steps, guidance {guidance}: "
                    + "; ".join(f"{name} " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in row[name].items() if isinstance(v, dict)) for name in references),
                    flush=True,
                )
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    panels = (("retina", "patch_cosine"), ("ihc", "patch_cosine"), ("retina", "background_gap"))
    for ax, (name, measure) in zip(axes, panels):
        for sampler in args.samplers:
            for steps in args.steps:
                chosen = [r for r in runs if r["sampler"] == sampler and r["steps"] == steps]
                means = [r[name][measure]["mean"] for r in chosen]
                low = [m - r[name][measure]["ci95"][0] for m, r in zip(means, chosen)]
                high = [r[name][measure]["ci95"][1] - m for m, r in zip(means, chosen)]
                ax.errorbar([r["guidance_scale"] for r in chosen], means, yerr=[low, high], capsize=3, marker="o", label=f"{sampler} {steps}")
        ax.set_xlabel("guidance scale")
        ax.set_title(f"{name}: {measure.replace('_', ' ')}", fontsize=9)
        ax.legend(fontsize=7)
    save(
        "patch_sampling",
        {"seeds": args.seeds, "crops": {k: [s.start, s.stop, t.start, t.stop] for k, (s, t) in CROPS.items()}, "runs": runs},
        fig,
        out=args.out,
    )
    return runs


if __name__ == "__main__":
    main()
