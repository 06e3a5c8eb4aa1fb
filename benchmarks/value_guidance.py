"""Reward vs compute for value-guided sampling: plain, best-of-N, SVDD-PM (M = 2, 4, 8), SVDD-MC, FK.

    python -m benchmarks.value_guidance [--samples 64] [--steps 20]

Two rewards: the digits classifier's log p(3 | x) on the class-unconditional digits model, and JPEG
compressibility (negative kB at quality 95) on the ihc-patches model conditioned on embeddings of real
patches. Same seeds for every method; DDIM with eta = 1 (the SVDD paper's image setting). Reports mean and
90th-percentile reward, NFE and reward calls per sample, and wall time; the claim tested is SVDD-PM above
best-of-N at equal NFE. Every backbone call holds at most --max-batch rows (default: plain's batch), so
wall-time ratios measure the method, not the CPU's slower per-row speed on larger batches. Writes
results/value_guidance.json and .png.
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import DDIMScheduler

from benchmarks.common import pyplot, save
from gen import zoo
from gen.guidance import SVDD, BestOfN, FKSteering, LearnedValue, PosteriorMeanValue, classifier_log_prob, jpeg_compressibility


def methods(reward, value_net, max_batch):
    out = {"plain": []}
    for n in (2, 4, 8):
        out[f"best-of-{n}"] = [BestOfN(reward, n=n, max_batch=max_batch)]
    for m in (2, 4, 8):
        out[f"SVDD-PM M={m}"] = [SVDD(PosteriorMeanValue(reward, max_batch=max_batch), num_candidates=m, max_batch=max_batch)]
    if value_net is not None:
        for m in (4, 16):
            out[f"SVDD-MC M={m}"] = [SVDD(LearnedValue(value_net), num_candidates=m, max_batch=max_batch)]
    for n in (4, 8):
        out[f"FK N={n}"] = [FKSteering(reward, num_particles=n, potential="max", resample_every=4, max_batch=max_batch)]
    return out


def run_task(name, generate, reward, value_net, max_batch):
    rows = {}
    for label, hooks in methods(reward, value_net, max_batch).items():
        start = time.perf_counter()
        out = generate(hooks)
        seconds = time.perf_counter() - start
        values = reward(out.images)
        rows[label] = {
            "mean_reward": values.mean().item(),
            "p90_reward": values.quantile(0.9).item(),
            "nfe_per_sample": out.nfe,
            "reward_calls_per_sample": out.reward_calls,
            "wall_s": seconds,
        }
        print(f"[{name}] {label:14s} mean {rows[label]['mean_reward']:8.3f}  p90 {rows[label]['p90_reward']:8.3f}  nfe {out.nfe:6.1f}  {seconds:6.2f}s")
    plain = rows["plain"]["wall_s"]
    for label, row in rows.items():
        row["wall_ratio_vs_plain"] = row["wall_s"] / plain
    return rows


def verdict(rows) -> list[str]:
    lines = []
    for m, n in ((2, 2), (4, 4), (8, 8)):
        svdd, best = rows[f"SVDD-PM M={m}"], rows[f"best-of-{n}"]
        lines.append(
            f"SVDD-PM M={m} (nfe {svdd['nfe_per_sample']:.0f}) mean {svdd['mean_reward']:.3f} vs best-of-{n} (nfe {best['nfe_per_sample']:.0f}) "
            f"{best['mean_reward']:.3f}: {'above' if svdd['mean_reward'] > best['mean_reward'] else 'NOT above'}; "
            f"wall time {svdd['wall_ratio_vs_plain']:.2f}x plain against the {m}x NFE/step limit"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=0, help="rows per backbone call for the search methods (0: --samples, plain's batch)")
    args = parser.parse_args(argv)
    max_batch = args.max_batch or args.samples
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {"samples": args.samples, "steps": args.steps, "max_batch": max_batch, "tasks": {}}

    digits = zoo.load("digits")
    digits.scheduler = DDIMScheduler.from_config(digits.scheduler.config)
    digit_reward = classifier_log_prob(zoo.load("digits-classifier"), 3)

    def gen_digits(hooks):
        return digits(batch_size=args.samples, num_inference_steps=args.steps, eta=1.0, hooks=hooks, generator=torch.Generator().manual_seed(0), output_type="pt")

    results["tasks"]["digit-3 log-prob (digits, unconditional)"] = run_task("digit", gen_digits, digit_reward, zoo.load("digits-value"), max_batch)

    patches = zoo.load("ihc-patches")
    patches.scheduler = DDIMScheduler.from_config(patches.scheduler.config)
    from gen.data.tissue import random_patches

    g = torch.Generator().manual_seed(0)
    real = torch.cat([random_patches("ihc", args.samples // 2, 32, g), random_patches("retina", args.samples - args.samples // 2, 32, g)])
    embeddings = patches.embed(real)
    jpeg = jpeg_compressibility()

    def gen_patches(hooks):
        return patches(embeddings=embeddings, num_inference_steps=args.steps, eta=1.0, hooks=hooks, generator=torch.Generator().manual_seed(0), output_type="pt")

    results["tasks"]["JPEG compressibility (ihc-patches)"] = run_task("jpeg", gen_patches, jpeg, None, max_batch)
    results["verdict"] = {task: verdict(rows) for task, rows in results["tasks"].items()}
    for task, lines in results["verdict"].items():
        print(task)
        for line in lines:
            print("  " + line)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (task, rows) in zip(axes, results["tasks"].items()):
        families = {}
        for label, row in rows.items():
            family = label.split(" ")[0].split("-of-")[0]
            family = {"best": "best-of-N", "SVDD-PM": "SVDD-PM", "SVDD-MC": "SVDD-MC", "FK": "FK", "plain": "plain"}.get(family, family)
            families.setdefault(family, []).append((row["nfe_per_sample"], row["mean_reward"], row["p90_reward"]))
        for family, points in families.items():
            points.sort()
            nfe, mean, p90 = zip(*points)
            line = ax.plot(nfe, mean, marker="o", label=f"{family} (mean)")[0]
            ax.plot(nfe, p90, marker="x", ls="--", color=line.get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("model evaluations per sample (NFE)")
        ax.set_ylabel("reward (solid: mean, dashed: 90th percentile)")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    save("value_guidance", results, fig)
    return results


if __name__ == "__main__":
    main()
