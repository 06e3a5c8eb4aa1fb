"""Diversity distillation: base vs distilled vs hybrid (base for the first k steps, distilled after).

    python -m benchmarks.hybrid [--samples 200] [--repeats 3]

Same seeds and class labels for every sampler. Diversity is the mean pairwise distance in the digits
classifier's feature space within each class, averaged over the classes (the distilled model collapses
*within* a prompt); fidelity the Fréchet distance to held-out digits (not Inception). Hybrids: the default
handover ("first-steps", the paper's: the base takes the first k steps of the distilled model's grid
from pure noise, as deterministic DDIM updates), the "noise-level" handover (the base on its own
scheduler's k first steps of the same coarse grid, then the distilled scheduler), and, for contrast, the
base's own fine grid (its first k of 50 small steps). Wall time is the median of interleaved runs. Targets: hybrid diversity >= distilled and close to or above base; hybrid
time <= distilled time + k base steps (+5%). Writes results/hybrid.json and .png.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDIMScheduler

from benchmarks.common import add_output_argument, interleaved, median, pyplot, save


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--base-steps", type=int, default=50)
    parser.add_argument("--distilled-steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_argument(parser)
    args = parser.parse_args(argv)

    import gen.zoo as zoo
    from gen.analysis.metrics import FeatureSpace, frechet_distance, mean_pairwise_distance
    from gen.pipelines import HybridDistilledPipeline
    from gen.data import digits

    base = zoo.load("digits")
    base.scheduler = DDIMScheduler.from_config(base.scheduler.config)
    distilled = zoo.load("digits-distilled")
    hybrid = HybridDistilledPipeline(base, distilled)
    space = FeatureSpace(zoo.load("digits-classifier"))
    test = digits(16, "test")
    real = space.features((test.images + 1) / 2)
    labels = torch.arange(10).repeat(args.samples // 10)
    seed = lambda: torch.Generator().manual_seed(0)
    g, n = args.guidance, args.distilled_steps
    samplers = {
        f"base ({args.base_steps} steps)": lambda: base(
            class_labels=labels, guidance_scale=g, num_inference_steps=args.base_steps, generator=seed(), output_type="pt"
        ),
        "base (1 step)": lambda: base(class_labels=labels, guidance_scale=g, num_inference_steps=1, generator=seed(), output_type="pt"),
        "base (2 steps)": lambda: base(class_labels=labels, guidance_scale=g, num_inference_steps=2, generator=seed(), output_type="pt"),
    }
    for steps in sorted({1, 2, n}):
        samplers[f"distilled ({steps} steps)"] = lambda steps=steps: distilled(
            class_labels=labels, num_inference_steps=steps, generator=seed(), output_type="pt"
        )
    for k in (1, 2):
        samplers[f"hybrid k={k}, {n}-step grid"] = lambda k=k: hybrid(
            class_labels=labels, guidance_scale=g, base_steps=k, distilled_steps=n, generator=seed(), output_type="pt"
        )
        samplers[f"hybrid k={k}, noise-level handover"] = lambda k=k: hybrid(
            class_labels=labels, guidance_scale=g, base_steps=k, distilled_steps=n, handover="noise-level", generator=seed(), output_type="pt"
        )
    samplers[f"hybrid k=1 on the {args.base_steps}-step base grid"] = lambda: hybrid(
        class_labels=labels,
        guidance_scale=g,
        handover="noise-level",
        num_inference_steps=args.base_steps,
        base_steps=1,
        distilled_steps=n,
        generator=seed(),
        output_type="pt",
    )
    rows = {}
    for name, call in samplers.items():
        out = call()
        features = space.features(out.images)
        within = [mean_pairwise_distance(features[labels == c]) for c in range(10)]
        rows[name] = {
            "diversity": sum(within) / len(within),
            "frechet": frechet_distance(features, real),
            "nfe": out.nfe,
            "accuracy": (space.predict(out.images) == labels).float().mean().item(),
        }
    times = interleaved(samplers, repeats=args.repeats)
    for name in rows:
        rows[name]["seconds"] = median(times[name])
        rows[name]["seconds_all"] = times[name]
        print(
            f"{name:28s} diversity {rows[name]['diversity']:.3f}  Fréchet {rows[name]['frechet']:.2f}  acc {rows[name]['accuracy']:.2f}  nfe {rows[name]['nfe']:.0f}  {rows[name]['seconds']:.3f}s"
        )
    distilled_key = f"distilled ({n} steps)"
    base_key = f"base ({args.base_steps} steps)"
    base_step = rows[base_key]["seconds"] / args.base_steps
    checks = {}
    for k in (1, 2):
        row = rows[f"hybrid k={k}, {n}-step grid"]
        budget = (rows[distilled_key]["seconds"] + k * base_step) * 1.05
        checks[f"k={k}"] = {
            "diversity_vs_distilled": row["diversity"] / rows[distilled_key]["diversity"],
            "diversity_vs_base": row["diversity"] / rows[base_key]["diversity"],
            "seconds": row["seconds"],
            "time_budget_s": budget,
            "within_time_budget": row["seconds"] <= budget,
        }
        print(
            f"hybrid k={k}: diversity {checks[f'k={k}']['diversity_vs_distilled']:.2f}x distilled, {checks[f'k={k}']['diversity_vs_base']:.2f}x base; "
            f"time {row['seconds']:.3f}s vs budget {budget:.3f}s"
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in rows.items():
        ax.scatter(row["seconds"], row["diversity"], s=30)
        ax.annotate(name, (row["seconds"], row["diversity"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"wall time for {len(labels)} samples (s)")
    ax.set_ylabel("within-class diversity (mean pairwise feature distance)")
    save("hybrid", {"samples": len(labels), "guidance": g, "rows": rows, "checks": checks}, fig, out=args.out)
    return rows


if __name__ == "__main__":
    main()
