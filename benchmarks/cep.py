"""CEP vs plain training on the zoo digits recipe, with and without 10% label corruption.

    python -m benchmarks.cep [--steps 1000] [--samples 500]

Six runs with the same budget and seeds: plain, CEP gaussian, CEP uniform (gamma 1), each on clean labels
and on labels of which 10% are flipped. Each is sampled (DDIM 25 steps, guidance 1 and 2, 50 per class) and
measured in the digits classifier's feature space: Fréchet distance to held-out digits, diversity (mean
pairwise distance), per-class coverage, and accuracy. Training throughput CEP/plain is timed separately
with short interleaved runs. The paper's claim (Chen et al. 2024): slight condition corruption / CEP
improves quality and diversity. Writes results/cep.json and .png (a table).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import pyplot, save

VARIANTS = {"plain": {}, "CEP gaussian": {"cep": "gaussian", "cep_gamma": 1.0}, "CEP uniform": {"cep": "uniform", "cep_gamma": 1.0}}


def recipe(**extra) -> dict:
    return dict(data="digits", condition="class", resolution=16, block_out_channels="32,64,64", layers_per_block=1, attention_levels="2",
                train_batch_size=64, learning_rate=3e-4, lr_warmup_steps=100, ema_decay=0.999, condition_dropout=0.1, seed=0,
                checkpointing_steps=0, progress=False, **extra)


def evaluate(folder: Path, per_class: int) -> dict:
    from diffusers import DDIMScheduler

    from gen import zoo
    from gen.analysis.metrics import FeatureSpace, frechet_distance, mean_pairwise_distance, per_class_coverage
    from gen.pipelines.loading import load_pipeline
    from gen.data import digits

    pipe = load_pipeline(folder)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    space = FeatureSpace(zoo.load("digits-classifier"))
    test = digits(16, "test")
    real = space.features((test.images + 1) / 2)
    labels = torch.arange(10).repeat_interleave(per_class)
    out = {}
    for scale in (1.0, 2.0):
        images = pipe(class_labels=labels, guidance_scale=scale, num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt").images
        features = space.features(images)
        coverage = per_class_coverage(real, test.labels, features)
        out[f"cfg {scale:g}"] = {
            "frechet": frechet_distance(features, real),
            "diversity": mean_pairwise_distance(features),
            "coverage": statistics.mean(coverage.values()),
            "accuracy": (space.predict(images) == labels).float().mean().item(),
        }
    return out


def throughput(steps: int = 40, repeats: int = 3) -> dict:
    from gen.training.train import TrainConfig, train

    times = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(repeats):
            for name, extra in VARIANTS.items():
                start = time.perf_counter()
                train(TrainConfig(output_dir=f"{scratch}/{r}-{name}", max_train_steps=steps, **recipe(**extra)))
                times[name].append((time.perf_counter() - start) / steps)
    plain = statistics.median(times["plain"])
    return {name: {"seconds_per_step": t, "ratio_vs_plain": statistics.median(t) / plain} for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--corrupt-rate", type=float, default=0.1)
    args = parser.parse_args(argv)
    from gen.training.train import TrainConfig, train

    results = {"steps": args.steps, "per_class": args.per_class, "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for corrupt in (0.0, args.corrupt_rate):
            for name, extra in VARIANTS.items():
                label = f"{name}, {int(corrupt * 100)}% labels corrupted"
                folder = Path(scratch) / label.replace(" ", "_").replace(",", "").replace("%", "pc")
                start = time.perf_counter()
                train(TrainConfig(output_dir=str(folder), max_train_steps=args.steps, corrupt_rate=corrupt, **recipe(**extra)))
                trained = time.perf_counter() - start
                metrics = evaluate(folder, args.per_class)
                results["runs"][label] = {"train_seconds": trained, **metrics}
                print(label, {k: {m: round(v, 3) for m, v in d.items()} for k, d in metrics.items()})
    results["throughput"] = throughput()
    for name, row in results["throughput"].items():
        print(f"throughput {name}: {row['ratio_vs_plain']:.3f}x plain seconds/step")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(results["runs"]) * 2 + 1))
    ax.axis("off")
    header = ["run", "cfg", "Fréchet ↓", "diversity ↑", "coverage ↑", "accuracy"]
    cells = [[run, cfg, f"{m['frechet']:.2f}", f"{m['diversity']:.2f}", f"{m['coverage']:.3f}", f"{m['accuracy']:.3f}"]
             for run, row in results["runs"].items() for cfg, m in row.items() if cfg.startswith("cfg")]
    table = ax.table(cellText=cells, colLabels=header, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.3)
    ax.set_title(f"digits recipe, {args.steps} steps each, {10 * args.per_class} samples; features: digits classifier (not Inception)", fontsize=9)
    save("cep", results, fig)
    return results


if __name__ == "__main__":
    main()
