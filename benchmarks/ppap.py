"""PPAP (Go et al., CVPR 2023) on `digits`: classifier guidance toward each class 0-9 from experts made without labels,
against its baselines, scored by a classifier none of them came from.

    python -m benchmarks.ppap [--per-class 8] [--seeds 0 1 2] [--steps 25] [--scale 2] [--train-steps 1500] [--out DIR]

Arms (the unconditional `digits` model, DDIM with eta 1, --steps steps, the same noise per seed):
- unguided;
- naive: the clean `digits-classifier` read on x_t, as if it were clean;
- single expert, labels: one noise-aware classifier (a LoRA of the clean one) trained on noised real digits with
  their labels (the paper's "finetune" baseline);
- PPAP 1 and PPAP 5: 1 or 5 experts distilled from the clean classifier on the model's own samples, no labels
  (PPAP 5 is the zoo's `digits-ppap`, PPAP 1 trained here with the same recipe);
- multi-expert, labels: 5 experts trained on labelled real digits (the paper's upper bound);
- SVDD-PM and best-of-N (reward: the clean classifier's log p(target | x0)), at the wall-clock of PPAP 5: their
  budget B is PPAP 5's seconds per sample over the unguided arm's, rounded, at least 2.
All classifier-guided arms use the same --scale. Trained arms are cached in out/bench/ppap-arms/ (retrained when
their recipe changes); --train-steps applies to them (the zoo entry was built with its recipe's steps).

Scored per seed over 10 x --per-class samples: target accuracy under the independent scorer (scikit-learn's SVC on
the 8x8 digits of the train split; the samples are 2x2-average-pooled to 8x8), the Fréchet distance to the 360
held-out digits in the 20-d PCA space of 8x8 pixels (fit on the train split), and seconds per sample. Means over
seeds with 95% intervals, and the paper's ordering (naive << single expert < multi-expert; PPAP close to
supervised) checked on the paired per-seed differences. Writes ppap.json and .png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import DEFAULT_OUT, add_output_argument, paired_claim, pyplot, save, summary


class IndependentScorer:
    """SVC on scikit-learn's 8x8 digits (train split: every fifth image held out) and a pixel PCA for the Fréchet
    distance; neither shares weights or training with the digits model, its classifier or the experts."""

    def __init__(self):
        from sklearn.datasets import load_digits
        from sklearn.decomposition import PCA
        from sklearn.svm import SVC

        data = load_digits()
        held_out = torch.arange(len(data.target)) % 5 == 0
        x, y = data.data / 16.0, data.target
        self.svc = SVC(gamma=0.05, C=10).fit(x[~held_out.numpy()], y[~held_out.numpy()])
        self.pca = PCA(20, random_state=0).fit(x[~held_out.numpy()])
        self.reference = torch.tensor(self.pca.transform(x[held_out.numpy()]))
        self.test_accuracy = float((self.svc.predict(x[held_out.numpy()]) == y[held_out.numpy()]).mean())

    @staticmethod
    def pixels(images: torch.Tensor):
        """Images in [0, 1], (B, 1, 16, 16) -> (B, 64) on the 8x8 digits' scale."""
        return F.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), 8).flatten(1).clamp(0, 1).numpy()

    def accuracy(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        return float((torch.as_tensor(self.svc.predict(self.pixels(images))) == targets).float().mean())

    def frechet(self, images: torch.Tensor) -> float:
        from gen.analysis.metrics import frechet_distance

        return frechet_distance(torch.tensor(self.pca.transform(self.pixels(images))), self.reference)


def trained_arm(name: str, out: Path, **options) -> Path:
    """Train (or reuse, when its recipe is unchanged) one set of experts with gen.training.ppap."""
    from gen.training.ppap import PPAPConfig, train_ppap

    recipe = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    folder = out / "ppap-arms" / f"{name}-{recipe}"
    if not (folder / "ppap.json").is_file():
        train_ppap(PPAPConfig(output_dir=str(folder), overwrite=True, progress=False, **options))
    return folder


def figure(results: dict):
    plt = pyplot()
    arms = list(results["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, label in zip(axes, ("accuracy", "frechet"), ("target accuracy (independent SVC)", "Fréchet distance to held-out digits (pixel PCA)")):
        means = [results["arms"][a][metric]["mean"] for a in arms]
        errors = [
            [m - results["arms"][a][metric]["ci95"][0] for a, m in zip(arms, means)],
            [results["arms"][a][metric]["ci95"][1] - m for a, m in zip(arms, means)],
        ]
        ax.bar(range(len(arms)), means, yerr=errors, capsize=3, color="#4878a8")
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"PPAP on digits: {len(results['seeds'])} seeds, 95% intervals, guidance scale {results['scale']}", fontsize=10)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=8, help="samples per target class and seed (>= 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (>= 3 for intervals)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (DDIM, eta 1)")
    parser.add_argument("--scale", type=float, default=2.0, help="classifier guidance scale of every guided arm")
    parser.add_argument("--train-steps", type=int, default=1500, help="optimisation steps of the arms trained here")
    add_output_argument(parser)
    args = parser.parse_args(argv)

    import gen.zoo as zoo
    from diffusers import DDIMScheduler

    from gen.guidance import SVDD, BestOfN, ClassifierGuidance, PosteriorMeanValue, classifier_log_prob
    from gen.guidance.experts import NoiseExperts

    scorer = IndependentScorer()
    pipe, clean = zoo.load("digits"), zoo.load("digits-classifier")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    cache = DEFAULT_OUT  # git-ignored, whatever --out says: trained weights never land in the tracked results
    recipe = dict(pipeline="zoo:digits", classifier="zoo:digits-classifier", lora_rank=16, max_train_steps=args.train_steps)
    trained = {
        "single expert, labels": trained_arm("supervised-1", cache, num_experts=1, labelled_data="digits", **recipe),
        "PPAP 1": trained_arm("ppap-1", cache, num_experts=1, **recipe),
        "PPAP 5": zoo.ENTRIES["digits-ppap"].folder,
        "multi-expert, labels": trained_arm("supervised-5", cache, num_experts=5, labelled_data="digits", **recipe),
    }
    naive = lambda x, t: clean((x + 1) / 2)  # noqa: E731  (the clean classifier as if x_t were clean)
    experts = {name: NoiseExperts.from_pretrained(folder) for name, folder in trained.items()}

    def arm_hooks(budget: int, target: int) -> dict:
        """Each arm's hooks toward one class (the value-based arms score a scalar target: one class per run)."""
        reward = classifier_log_prob(clean, target)
        return {
            "unguided": [],
            "naive clean classifier": [ClassifierGuidance(naive, target, scale=args.scale)],
            **{name: [ClassifierGuidance(model, target, scale=args.scale)] for name, model in experts.items()},
            f"SVDD-PM (M={budget})": [SVDD(PosteriorMeanValue(reward), num_candidates=budget)],
            f"best-of-N (N={budget})": [BestOfN(reward, n=budget)],
        }

    def run(arm: str, budget: int, seed: int):
        """--per-class samples toward each class 0-9 (class k from seed 100 * seed + k): images, targets, s/sample."""
        images, outs, started = [], [], time.perf_counter()
        for target in range(10):
            hooks = arm_hooks(budget, target)[arm]
            generator = torch.Generator().manual_seed(100 * seed + target)
            out = pipe(
                class_labels=None, batch_size=args.per_class, num_inference_steps=args.steps, eta=1.0, generator=generator, hooks=hooks, output_type="pt"
            )
            images.append(out.images)
            outs.append(out)
        seconds = (time.perf_counter() - started) / (10 * args.per_class)
        return torch.cat(images), outs[0], seconds

    targets = torch.arange(10).repeat_interleave(args.per_class)
    # the budget at PPAP 5's wall-clock, timed on the first seed before the arms run
    plain_time, ppap_time = run("unguided", 2, args.seeds[0])[2], run("PPAP 5", 2, args.seeds[0])[2]
    budget = max(2, round(ppap_time / plain_time))
    print(f"seconds per sample: unguided {plain_time:.4f}, PPAP 5 {ppap_time:.4f}: SVDD-PM and best-of-N at budget {budget}", flush=True)
    per_arm: dict = {}
    for seed in args.seeds:
        for name in arm_hooks(budget, 0):
            images, out, seconds = run(name, budget, seed)
            row = per_arm.setdefault(name, {"accuracy": [], "frechet": [], "seconds_per_sample": [], "nfe": out.nfe, "reward_calls": out.reward_calls})
            row["accuracy"].append(scorer.accuracy(images, targets))
            row["frechet"].append(scorer.frechet(images))
            row["seconds_per_sample"].append(seconds)
            print(f"seed {seed} {name:>24}: accuracy {row['accuracy'][-1]:.3f}, FD {row['frechet'][-1]:.2f}, {seconds * 1000:.1f} ms/sample", flush=True)
    arms = {name: {k: summary(v) if isinstance(v, list) else v for k, v in row.items()} for name, row in per_arm.items()}

    def paired(a: str, b: str) -> dict:
        return paired_claim(per_arm[a]["accuracy"], per_arm[b]["accuracy"], f"{a} > {b}")

    claims = [
        paired("single expert, labels", "naive clean classifier"),
        paired("multi-expert, labels", "single expert, labels"),
        paired("PPAP 5", "PPAP 1"),
        paired("PPAP 5", "naive clean classifier"),
        paired("PPAP 5", "unguided"),
    ]
    gap = [x - y for x, y in zip(per_arm["multi-expert, labels"]["accuracy"], per_arm["PPAP 5"]["accuracy"])]
    claims.append({"difference": summary(gap), "claim": "PPAP 5 close to the supervised multi-expert (their accuracy gap)", "verdict": "measured"})
    for claim in claims:
        d = claim["difference"]
        print(f"{claim['claim']}: {d['mean']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}), {claim['verdict']}")
    results = {
        "seeds": args.seeds,
        "per_class": args.per_class,
        "steps": args.steps,
        "scale": args.scale,
        "train_steps": args.train_steps,
        "budget_at_ppap_wall_clock": budget,
        "scorer": {"what": "sklearn SVC (gamma 0.05, C 10) on 8x8 digits, train split", "held_out_accuracy": scorer.test_accuracy},
        "arms": arms,
        "claims": claims,
    }
    save("ppap", results, figure(results), out=args.out)
    return results


if __name__ == "__main__":
    main()
