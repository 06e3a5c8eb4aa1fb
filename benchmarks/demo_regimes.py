"""Where the demo's effects exist: CADS over guidance scales, and the hybrid's step split and guidance.

    python -m benchmarks.demo_regimes [--parts cads hybrid] [--per-class 8]

On the zoo `digits` pair, all ten classes, 3 seeds, 95% intervals. Within-class diversity is the mean
pairwise distance in the digits classifier's feature space among samples of one class, averaged over the
classes; accuracy is the fraction classified as their class.
- cads: DDIM 20 steps, eta 0, guidance 1 / 2 / 4 / 8 / 12, each plain and with CADS at its defaults
  (tau1 0.6, tau2 0.9, s 0.25). The paper's claim: CADS restores diversity that high guidance removes.
- hybrid: base (DDIM 25 steps, CFG 2), the 4-step distilled student, and hybrids with the base taking the
  first k = 1, 2, 3 steps of a 4- or 8-step distilled grid at base guidance 1 or 2. The claim: hybrid
  >= distilled, close to base.
The demo shows the regimes these pick (gen/demo.py). Writes results/demo_regimes.json.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDIMScheduler

from benchmarks.common import add_output_argument, interval, save

SEEDS = (0, 1, 2)


def summary(values: list[float]) -> dict:
    low, high = interval(values)
    return {"mean": sum(values) / len(values), "ci95": [low, high], "values": values}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["cads", "hybrid"], choices=["cads", "hybrid"])
    parser.add_argument("--per-class", type=int, default=8, help="samples per class and seed")
    add_output_argument(parser)
    args = parser.parse_args(argv)

    import gen.zoo as zoo
    from gen.analysis.metrics import FeatureSpace, within_class_diversity
    from gen.conditioning import CADS
    from gen.pipelines import HybridDistilledPipeline

    torch.set_num_threads(1)
    pipe = zoo.load("digits")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    space = FeatureSpace(zoo.load("digits-classifier"))
    labels = torch.arange(10).repeat_interleave(args.per_class)
    results: dict = {"seeds": list(SEEDS), "per_class": args.per_class}

    def measure(name: str, make) -> None:
        outs = [make(torch.Generator().manual_seed(seed)) for seed in SEEDS]
        row = {
            "diversity": summary([within_class_diversity(space, o, labels) for o in outs]),
            "accuracy": summary([(space.predict(o) == labels).float().mean().item() for o in outs]),
        }
        results.setdefault(part, {})[name] = row
        print(f"{part:6s} {name:34s} diversity {row['diversity']['mean']:.3f} {row['diversity']['ci95']}  accuracy {row['accuracy']['mean']:.3f}", flush=True)

    for part in args.parts:
        if part == "cads":
            for scale in (1.0, 2.0, 4.0, 8.0, 12.0):
                for hooks in ([], [CADS()]):
                    if scale == 1.0 and hooks:
                        continue  # no guidance: CADS anneals the condition of a guided run
                    measure(
                        f"CFG {scale:g}{' + CADS' if hooks else ''}",
                        lambda g, s=scale, h=hooks: pipe(
                            class_labels=labels, guidance_scale=s, num_inference_steps=20, eta=0.0, hooks=h, generator=g, output_type="pt"
                        ).images,
                    )
        else:
            distilled = zoo.load("digits-distilled")
            distilled.set_progress_bar_config(disable=True)
            measure(
                "base (DDIM 25, CFG 2)", lambda g: pipe(class_labels=labels, guidance_scale=2.0, num_inference_steps=25, generator=g, output_type="pt").images
            )
            measure("distilled (4 steps)", lambda g: distilled(class_labels=labels, num_inference_steps=4, generator=g, output_type="pt").images)
            for steps in (4, 8):
                for k in (1, 2, 3):
                    hybrid = HybridDistilledPipeline(pipe, distilled, base_steps=k, distilled_steps=steps)
                    hybrid.set_progress_bar_config(disable=True)
                    for scale in (1.0, 2.0):
                        measure(
                            f"hybrid k={k}, {steps}-step grid, CFG {scale:g}",
                            lambda g, h=hybrid, s=scale: h(class_labels=labels, guidance_scale=s, generator=g, output_type="pt").images,
                        )
    save("demo_regimes", results, out=args.out)


if __name__ == "__main__":
    main()
