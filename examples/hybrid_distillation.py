"""Diversity distillation (Gandikota & Bau 2025) on the zoo digits pair: the base model, its 4-step
distilled student, and the hybrid (base for the first k steps, distilled after), with DT strips.

    python examples/hybrid_distillation.py --digit 7 --base-steps 1 --distilled-steps 4 --handover first-steps --out out/examples
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gen import zoo
from gen.analysis import DTVisualizer
from gen.analysis.metrics import FeatureSpace, mean_pairwise_distance
from gen.demo import grid_image
from gen.io import save_image, write_json
from gen.pipelines import HybridDistilledPipeline


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digit", type=int, default=7)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--base-steps", type=int, default=1, help="k: steps the base model takes before the handover")
    parser.add_argument("--distilled-steps", type=int, default=4)
    parser.add_argument("--base-schedule", type=int, default=50, help="steps of the base model's own run")
    parser.add_argument("--guidance", type=float, default=2.0, help="CFG for the base steps (the student has it baked in)")
    parser.add_argument("--handover", default="first-steps", choices=["first-steps", "noise-level"],
                        help="first-steps: the base takes the first k steps of the distilled grid (the paper's); noise-level: the base's own scheduler first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/examples")
    args = parser.parse_args(argv)

    base, distilled = zoo.load("digits"), zoo.load("digits-distilled")
    hybrid = HybridDistilledPipeline(base, distilled, base_steps=args.base_steps, distilled_steps=args.distilled_steps, handover=args.handover)
    labels = [args.digit] * args.samples
    seed = lambda: torch.Generator().manual_seed(args.seed)
    runs = {
        "base": lambda hooks: base(class_labels=labels, guidance_scale=args.guidance, num_inference_steps=args.base_schedule, hooks=hooks, generator=seed(), output_type="pt"),
        "distilled": lambda hooks: distilled(class_labels=labels, num_inference_steps=args.distilled_steps, hooks=hooks, generator=seed(), output_type="pt"),
        "hybrid": lambda hooks: hybrid(class_labels=labels, guidance_scale=args.guidance, hooks=hooks, generator=seed(), output_type="pt"),
    }
    space = FeatureSpace(zoo.load("digits-classifier"))
    folder, summary, rows = Path(args.out), {}, []
    for name, run in runs.items():
        strip = DTVisualizer(max_samples=4)
        out = run([strip])
        summary[name] = {"diversity": mean_pairwise_distance(space.features(out.images)), "nfe": out.nfe}
        save_image(folder / f"dt_{name}.png", strip.strip(scale=8))
        rows.append(out.images[:16])
    save_image(folder / "hybrid.png", grid_image(torch.cat(rows), 16, scale=3))
    write_json(folder / "hybrid.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
