"""SVDD-PM vs best-of-N vs FK steering at equal compute, on two rewards, over seeds.

    python -m benchmarks.value_guidance [--samples 32] [--steps 20 50] [--budgets 2 4 8] [--seeds 0 1 2] [--tasks digit jpeg] [--merge FILE] [--out DIR]

Tasks: the digits classifier's log p(3 | x) on the class-unconditional `digits` model, and JPEG
compressibility (negative kB at quality 95) on `ihc-patches` conditioned on embeddings of real patches.
Every method runs a fully stochastic sampler (the SVDD paper's image setting) from the same seeds: DDIM
with eta = 1 on `digits`, the model's own DDPM sampler on `ihc-patches` (the same step; its zero-terminal-SNR
schedule starts where diffusers' DDIM with eta > 0 returns NaN). At each budget
B, SVDD-PM draws M = B candidates per step, best-of-N keeps the best of N = B samples and FK steering
carries N = B particles (reference settings: max potential, lambda 10, resampling every fifth of the
steps inside [20%, 80%], adaptive): all cost about B model evaluations per sample and step, and each
row reports its NFE and reward calls. SVDD-MC (the learned value net; digits only) runs at plain cost.
For every (task, steps, method, budget): the mean reward over --samples samples, per seed, then the mean
over seeds with a 95% interval; and the paired difference SVDD-PM minus best-of-N per seed with its
interval. The claim under test (the paper's Table 1): SVDD-PM above best-of-N at equal NFE. Writes
value_guidance.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from benchmarks.common import add_output_argument, pyplot, save, summary


def methods(reward, value_net, budget: int, max_batch: int) -> dict:
    from gen.guidance import SVDD, BestOfN, FKSteering, LearnedValue, PosteriorMeanValue

    out = {
        "best-of-N": [BestOfN(reward, n=budget, max_batch=max_batch)],
        "SVDD-PM": [SVDD(PosteriorMeanValue(reward, max_batch=max_batch), num_candidates=budget, max_batch=max_batch)],
        "FK": [FKSteering(reward, num_particles=budget, max_batch=max_batch)],
    }
    if value_net is not None:
        out["SVDD-MC"] = [SVDD(LearnedValue(value_net), num_candidates=4 * budget, max_batch=max_batch)]
    return out


def run_task(generate, reward, value_net, steps_list, budgets, seeds, max_batch, log) -> dict:
    table = {}
    for steps in steps_list:
        rows: dict = {}
        outs = [generate([], steps, seed) for seed in seeds]
        plain = [reward(out.images).mean().item() for out in outs]
        rows["plain"] = {"1": {"reward": summary(plain), "nfe": outs[0].nfe}}  # a guided model counts both branches
        log(f"  steps {steps} plain: {rows['plain']['1']['reward']['mean']:.3f}")
        for budget in budgets:
            for name in methods(reward, value_net, budget, max_batch):
                per_seed, nfe, calls, seconds = [], 0.0, 0.0, 0.0
                for seed in seeds:
                    start = time.perf_counter()
                    out = generate(methods(reward, value_net, budget, max_batch)[name], steps, seed)
                    seconds += time.perf_counter() - start
                    per_seed.append(reward(out.images).mean().item())
                    nfe, calls = out.nfe, out.reward_calls
                rows.setdefault(name, {})[str(budget)] = {"reward": summary(per_seed), "nfe": nfe, "reward_calls": calls, "wall_s": seconds / len(seeds)}
                log(f"  steps {steps} {name:10s} B={budget}: {rows[name][str(budget)]['reward']['mean']:.3f} (nfe {nfe:.0f}, reward calls {calls:.0f})")
        for budget in budgets:
            gap = [a - b for a, b in zip(rows["SVDD-PM"][str(budget)]["reward"]["per_seed"], rows["best-of-N"][str(budget)]["reward"]["per_seed"])]
            rows["SVDD-PM"][str(budget)]["minus_best_of_n"] = summary(gap)
        table[str(steps)] = rows
    return table


COLOURS = {"plain": "C7", "best-of-N": "C1", "FK": "C3", "SVDD-PM": "C2", "SVDD-MC": "C0"}  # one colour per method in every panel


def figure(results: dict):
    """Mean reward against NFE, one panel per task and step count."""
    plt = pyplot()
    panels = [(task, steps) for task, by_steps in results["tasks"].items() for steps in by_steps]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (task, steps) in zip(axes[0], panels):
        rows = results["tasks"][task][steps]
        for name, by_budget in rows.items():
            budgets = sorted(by_budget, key=int)
            x = [by_budget[b]["nfe"] for b in budgets]
            y = [by_budget[b]["reward"]["mean"] for b in budgets]
            err = [
                [by_budget[b]["reward"]["mean"] - by_budget[b]["reward"]["ci95"][0] for b in budgets],
                [by_budget[b]["reward"]["ci95"][1] - by_budget[b]["reward"]["mean"] for b in budgets],
            ]
            dashed = name == "FK"  # FK often equals best-of-N exactly (it never resamples): drawn dashed over it
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name, color=COLOURS.get(name), ls="--" if dashed else "-", zorder=3 if dashed else 2)
        ax.set_xscale("log")
        ax.set_xlabel("model evaluations per sample (NFE)")
        ax.set_ylabel("mean reward (95% CI over seeds)")
        ax.set_title(f"{task}, {steps} steps", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-batch", type=int, default=0, help="rows per backbone call (0: --samples, plain's batch)")
    parser.add_argument("--tasks", nargs="+", default=["digit", "jpeg"], choices=["digit", "jpeg"])
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="an earlier value_guidance.json whose other tasks to keep (same samples, seeds and budgets): rerun one task after its model changed",
    )
    add_output_argument(parser)
    args = parser.parse_args(argv)
    max_batch = args.max_batch or args.samples
    earlier = json.loads(args.merge.read_text()) if args.merge else None
    if earlier is not None:
        for name in ("samples", "seeds", "budgets"):
            if earlier.get(name) != getattr(args, name):
                raise SystemExit(f"--merge: {args.merge} was run with {name} {earlier.get(name)}, this run with {getattr(args, name)}; give the same.")

    import gen.zoo as zoo
    from gen.data.tissue import random_patches
    from gen.guidance import classifier_log_prob, jpeg_compressibility

    results = {
        "samples": args.samples,
        "seeds": args.seeds,
        "budgets": args.budgets,
        "max_batch": max_batch,
        "samplers": {"digit": "DDIM, eta 1", "jpeg": "DDPM (ihc-patches saved sampler)"},
        "tasks": {},
    }
    if "digit" in args.tasks:
        digits = zoo.load("digits")
        digits.scheduler = DDIMScheduler.from_config(digits.scheduler.config)
        digits.set_progress_bar_config(disable=True)

        def gen_digits(hooks, steps, seed):
            return digits(
                batch_size=args.samples, num_inference_steps=steps, eta=1.0, hooks=hooks, generator=torch.Generator().manual_seed(seed), output_type="pt"
            )

        print("digit-3 log p(3|x), digits (unconditional)")
        results["tasks"]["digit"] = run_task(
            gen_digits, classifier_log_prob(zoo.load("digits-classifier"), 3), zoo.load("digits-value"), args.steps, args.budgets, args.seeds, max_batch, print
        )
    if "jpeg" in args.tasks:
        patches = zoo.load("ihc-patches")  # its saved DDPMScheduler: stochastic at every step, as DDIM with eta = 1
        patches.set_progress_bar_config(disable=True)
        g = torch.Generator().manual_seed(0)
        real = torch.cat([random_patches("ihc", args.samples // 2, 32, g), random_patches("retina", args.samples - args.samples // 2, 32, g)])
        embeddings = patches.embed(real)

        def gen_patches(hooks, steps, seed):
            return patches(embeddings=embeddings, num_inference_steps=steps, hooks=hooks, generator=torch.Generator().manual_seed(seed), output_type="pt")

        print("JPEG compressibility (-kB), ihc-patches")
        results["tasks"]["jpeg"] = run_task(gen_patches, jpeg_compressibility(), None, args.steps, args.budgets, args.seeds, max_batch, print)

    if earlier is not None:
        kept = {task: rows for task, rows in earlier["tasks"].items() if task not in results["tasks"]}
        results["tasks"] = {**kept, **results["tasks"]}
        results["kept_from_earlier_run"] = {"tasks": sorted(kept), "machine": earlier.get("machine")}
    verdicts = []
    for task, by_steps in results["tasks"].items():
        for steps, rows in by_steps.items():
            for budget in args.budgets:
                gap = rows["SVDD-PM"][str(budget)]["minus_best_of_n"]
                low, high = gap["ci95"]
                word = "above" if low > 0 else "below" if high < 0 else "not distinguishable from"
                verdicts.append(
                    f"{task}, {steps} steps, budget {budget}: SVDD-PM {word} best-of-N (difference {gap['mean']:+.3f}, 95% CI {low:+.3f} to {high:+.3f})"
                )
    results["verdict"] = verdicts
    print("\n".join(verdicts))

    save("value_guidance", results, figure(results), out=args.out)
    return results


if __name__ == "__main__":
    main()
