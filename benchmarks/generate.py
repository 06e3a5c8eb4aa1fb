"""`gen generate` at scale on CPU: throughput on 1 vs 2 processes, and its overhead over a plain loop of pipeline
calls (the same model, batches and generators, PNGs saved) at equal batch size.

    python -m benchmarks.generate [--items 96] [--batch-size 8] [--steps 20] [--repeats 3]

- processes: wall time of `torchrun --nproc_per_node N -m gen generate zoo-digits ...` for N = 1, 2 (each
  process one thread, torchrun's default), and of one process with every core's threads; start-up included.
  Throughput = samples / wall time; the ratio 2 vs 1 process with a 95% interval over repeats.
- overhead: in one process, `gen generate` (model loading, seeds, metadata, shards, merge) vs the plain loop, paired.
Writes generate.json + .png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_output_argument, interval, pyplot, save


def _labels(items: int) -> list[str]:
    return [str(i % 10) for i in range(items)]


def _generate_command(processes: int | None, args, out: Path) -> list[str]:
    tail = ["generate", "digits", "--class-labels", *_labels(args.items), "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--out", str(out)]
    if processes is None:
        return [sys.executable, "-m", "gen", *tail]
    return [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(processes), "-m", "gen", *tail]


def _wall(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def plain_loop(args, out: Path) -> None:
    """What a user would write without gen generate: the pipeline over the same batches, PNGs saved."""
    import torch

    import gen.zoo as zoo
    from gen.generate import Item, _to_pil, batches, file_name, sample_seed

    pipe = zoo.load("digits")
    pipe.set_progress_bar_config(disable=True)
    items = [Item(i, "label", int(label)) for i, label in enumerate(_labels(args.items))]
    for batch in batches(items, 1, args.batch_size):
        generators = [torch.Generator().manual_seed(sample_seed(0, item.index, j)) for item, j in batch]
        images = pipe(class_labels=[item.value for item, _ in batch], num_inference_steps=args.steps, generator=generators, output_type="pt").images
        for (item, j), image in zip(batch, images):
            _to_pil(image).save(out / file_name(item, j))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    import torch

    runs = [("one process, one thread", 1, env), ("two processes, one thread each", 2, env), ("one process, all threads", None, dict(os.environ))]
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:  # one GPU: one process (two would want a second device)
        runs = [("one process on the GPU", None, dict(os.environ))]
    rows: dict = {name: [] for name, _, _ in runs}
    for _ in range(args.repeats):
        for name, processes, environment in runs:
            with tempfile.TemporaryDirectory() as folder:
                rows[name].append(_wall(_generate_command(processes, args, Path(folder) / "out"), environment))
    ones, twos = rows.get("one process, one thread", []), rows.get("two processes, one thread each", [])
    ratios = [one / two for one, two in zip(ones, twos)] or [float("nan")]
    result = {
        "items": args.items,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "wall_s": rows,
        "samples_per_s": {name: [args.items / t for t in times] for name, times in rows.items()},
        "speedup_2_vs_1": {"ratios": ratios, "mean": sum(ratios) / len(ratios), "ci95": interval(ratios)},
    }
    print(
        f"2 vs 1 process throughput: {result['speedup_2_vs_1']['mean']:.2f}x (95% CI {result['speedup_2_vs_1']['ci95'][0]:.2f}-{result['speedup_2_vs_1']['ci95'][1]:.2f})"
    )

    from gen.cli import main as gen_main

    overhead = []
    with tempfile.TemporaryDirectory() as folder:  # warm both: the zoo model's first load, allocator, kernels
        (Path(folder) / "plain").mkdir()
        plain_loop(args, Path(folder) / "plain")
    for _ in range(args.repeats + 2):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            (out / "plain").mkdir()
            start = time.perf_counter()
            plain_loop(args, out / "plain")
            plain = time.perf_counter() - start
            start = time.perf_counter()
            gen_main(
                [
                    "generate",
                    "digits",
                    "--class-labels",
                    *_labels(args.items),
                    "--batch-size",
                    str(args.batch_size),
                    "--steps",
                    str(args.steps),
                    "--out",
                    str(out / "gen"),
                ]
            )
            overhead.append((time.perf_counter() - start) / plain)
    result["overhead"] = {"ratios": overhead, "mean": sum(overhead) / len(overhead), "ci95": interval(overhead), "target": 1.05}
    print(f"gen generate / plain loop: {result['overhead']['mean']:.3f}x (95% CI {result['overhead']['ci95'][0]:.3f}-{result['overhead']['ci95'][1]:.3f})")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(rows)
    means = [sum(result["samples_per_s"][n]) / len(rows[n]) for n in names]
    ax.barh(range(len(names)), means, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel(f"samples / s (digits, {args.steps} steps, start-up included)")
    save("generate", result, fig, out=args.out)
    return result


if __name__ == "__main__":
    main()
