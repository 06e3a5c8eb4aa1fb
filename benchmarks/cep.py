"""CEP vs plain training at equal steps, over training seeds, on class-conditional digits.

    python -m benchmarks.cep [--steps 3000] [--seeds 0 1 2] [--per-class 50] [--variants ...] [--corrupt-rate 0.0] [--out DIR]
    # seeds in parallel processes, then one summary:
    python -m benchmarks.cep --seeds 0 --runs-only --out DIR & python -m benchmarks.cep --seeds 1 --runs-only --out DIR & ...
    python -m benchmarks.cep --merge DIR/cep-runs-seed*.json --out DIR

The paper's claim (Chen et al. 2024): slight condition embedding perturbation improves the quality and
diversity of class-conditional models. The setting here is where a regulariser should show: the zoo's
digits recipe trained long (--steps, default 3000 steps at batch 64, about 130 epochs of 1437 images; the
README's figures are from 1000 steps, what 2 CPU cores allowed).
For each training seed, plain, CEP gaussian and CEP uniform (gamma 1) train with the same seed and steps;
each is sampled (DDIM 25 steps, guidance 1 and 2, --per-class per class, same sampling seed) and measured in
the digits classifier's feature space: Fréchet distance to the held-out digits, diversity (mean pairwise
distance), per-class coverage and accuracy. Reported: each metric's mean over seeds with a 95% interval,
and the paired difference CEP minus plain per seed with its interval. Training throughput CEP/plain is
timed with short interleaved runs. Writes cep.json and .png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_output_argument, interval, pyplot, save

VARIANTS = {"plain": {}, "CEP gaussian": {"cep": "gaussian", "cep_gamma": 1.0}, "CEP uniform": {"cep": "uniform", "cep_gamma": 1.0}}


def recipe(seed: int = 0, **extra) -> dict:
    return dict(
        data="digits",
        condition="class",
        resolution=16,
        block_out_channels="32,64,64",
        layers_per_block=1,
        attention_levels="2",
        train_batch_size=64,
        learning_rate=3e-4,
        lr_warmup_steps=100,
        ema_decay=0.999,
        condition_dropout=0.1,
        seed=seed,
        checkpointing_steps=0,
        progress=False,
        **extra,
    )


def evaluate(folder: Path, per_class: int) -> dict:
    from diffusers import DDIMScheduler

    import gen.zoo as zoo
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


def summarise(runs: dict, seeds: list[int]) -> tuple[dict, list[str]]:
    """Per variant and guidance scale: each metric's mean over seeds with its 95% interval, and the paired
    difference from plain; and a verdict line per (variant, scale, metric)."""
    summary: dict = {}
    for name, rows in runs.items():
        for cfg in ("cfg 1", "cfg 2"):
            for metric in ("frechet", "diversity", "coverage", "accuracy"):
                values = [r[cfg][metric] for r in rows]
                low, high = interval(values)
                entry = {"mean": statistics.fmean(values), "ci95": [low, high], "per_seed": values}
                if name != "plain":
                    diff = [a - b for a, b in zip(values, (r[cfg][metric] for r in runs["plain"]))]
                    dlow, dhigh = interval(diff)
                    entry["minus_plain"] = {"mean": statistics.fmean(diff), "ci95": [dlow, dhigh]}
                summary.setdefault(name, {}).setdefault(cfg, {})[metric] = entry
    verdicts = []
    for name in runs:
        if name == "plain":
            continue
        for cfg in ("cfg 1", "cfg 2"):
            for metric, better in (("frechet", "lower"), ("diversity", "higher")):
                d = summary[name][cfg][metric]["minus_plain"]
                low, high = d["ci95"]
                word = "no distinguishable effect" if low <= 0 <= high else ("better" if (high < 0) == (better == "lower") else "worse")
                verdicts.append(f"{name} vs plain, {cfg}, {metric}: {d['mean']:+.3f} (95% CI {low:+.3f} to {high:+.3f}): {word}")
    return summary, verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="which arms to train (plain is always one)")
    parser.add_argument("--corrupt-rate", type=float, default=0.0, help="also flip this fraction of labels in every run (0: clean labels)")
    parser.add_argument(
        "--runs-only", action="store_true", help="train and measure, write cep-runs-seed<S>.json per seed, no summary (to run seeds in parallel processes)"
    )
    parser.add_argument("--merge", type=Path, nargs="+", help="summarise cep-runs-*.json files written by --runs-only instead of training")
    add_output_argument(parser)
    args = parser.parse_args(argv)
    from gen.io import write_json
    from gen.training.train import TrainConfig, train

    variants = ["plain"] + [v for v in args.variants if v != "plain"]
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        seeds = [seed for part in parts for seed in part["seeds"]]
        steps, per_class, corrupt_rate = parts[0]["steps"], parts[0]["per_class"], parts[0]["corrupt_rate"]
        if any((q["steps"], q["per_class"], q["corrupt_rate"], list(q["runs"])) != (steps, per_class, corrupt_rate, list(parts[0]["runs"])) for q in parts):
            raise SystemExit("--merge: the files come from runs with different settings or variants; merge like with like.")
        runs = {name: [row for q in parts for row in q["runs"][name]] for name in parts[0]["runs"]}
    else:
        seeds, steps, per_class, corrupt_rate = args.seeds, args.steps, args.per_class, args.corrupt_rate
        runs = {name: [] for name in variants}
        with tempfile.TemporaryDirectory() as scratch:
            for seed in seeds:
                for name in variants:
                    folder = Path(scratch) / f"{seed}-{name.replace(' ', '_')}"
                    start = time.perf_counter()
                    train(TrainConfig(output_dir=str(folder), max_train_steps=steps, corrupt_rate=corrupt_rate, **recipe(seed, **VARIANTS[name])))
                    metrics = evaluate(folder, per_class)
                    runs[name].append({"seed": seed, "train_seconds": time.perf_counter() - start, **metrics})
                    print(f"seed {seed} {name}:", {k: {m: round(v, 3) for m, v in d.items()} for k, d in metrics.items()}, flush=True)
        if args.runs_only:
            args.out.mkdir(parents=True, exist_ok=True)
            for seed in seeds:
                part = {
                    "steps": steps,
                    "seeds": [seed],
                    "per_class": per_class,
                    "corrupt_rate": corrupt_rate,
                    "runs": {name: [r for r in rows if r["seed"] == seed] for name, rows in runs.items()},
                }
                write_json(args.out / f"cep-runs-seed{seed}.json", part)
            return runs
    summary, verdicts = summarise(runs, seeds)
    print("\n".join(verdicts))
    results = {
        "steps": steps,
        "seeds": seeds,
        "per_class": per_class,
        "corrupt_rate": corrupt_rate,
        "runs": runs,
        "summary": summary,
        "verdict": verdicts,
        "throughput": throughput(),
    }
    for name, row in results["throughput"].items():
        print(f"throughput {name}: {row['ratio_vs_plain']:.3f}x plain seconds/step")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(runs)
    for ax, metric in zip(axes, ("frechet", "diversity")):
        for offset, cfg in enumerate(("cfg 1", "cfg 2")):
            means = [summary[n][cfg][metric]["mean"] for n in names]
            err = [
                [m - summary[n][cfg][metric]["ci95"][0] for n, m in zip(names, means)],
                [summary[n][cfg][metric]["ci95"][1] - m for n, m in zip(names, means)],
            ]
            ax.errorbar([i + 0.15 * offset for i in range(len(names))], means, yerr=err, fmt="o", capsize=3, label=cfg)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{metric} (95% CI over {len(seeds)} training seeds)", fontsize=9)
        ax.legend(fontsize=8)
    save("cep", results, fig, out=args.out)
    return results


if __name__ == "__main__":
    main()
