"""The `gen` command.

    gen demo [--out out/demo]          the main job on the bundled zoo: pictures + report.md
    gen zoo list | gen zoo build NAME  the bundled models, and the command that rebuilds each
    gen sample digits --class-labels 3 3 7 --out out/samples --name threes.png
    gen train ...                      = python -m gen.training.train ...
    gen bench NAME [...]               = python -m benchmarks.NAME ... (from a checkout of the repository)
"""

from __future__ import annotations

import argparse
import sys


def _zoo(args) -> int:
    import gen.zoo as zoo

    if args.action == "list":
        for name in zoo.available():
            item = zoo.entry(name)
            size = item.size_bytes()
            state = f"{size / 1e6:.2f} MB" if size else "not built"
            print(f"{name:18s} {state:>10s}  {item.what}\n{'':30s}made: {item.made}\n{'':30s}rebuild: {item.rebuild}")
        return 0
    from gen.zoo.recipes import build

    names = zoo.available() if args.name == "all" else [args.name]
    for name in names:
        path = build(name)
        print(f"built {name} -> {path}")
    return 0


def _sample(args) -> int:
    import json

    import torch

    import gen.zoo as zoo
    from gen.demo import grid_image
    from gen.io import inside, save_image, write_text
    from gen.pipelines.loading import load_pipeline

    target = inside(args.out, args.name, "name")
    if target.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"name: {args.name!r} must end in .png or .jpg.")
    pipe = zoo.load(args.model) if args.model in zoo.available() else load_pipeline(args.model, name="model")
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, generator=torch.Generator().manual_seed(args.seed), output_type="pt")
    if args.prompt is not None:
        out = pipe(args.prompt, num_images_per_prompt=args.num, **call)
    elif args.class_labels:
        out = pipe(class_labels=args.class_labels, **call)
    else:
        out = pipe(class_labels=None, batch_size=args.num, **call)
    save_image(target, grid_image(out.images, min(len(out.images), 8), scale=args.scale))
    write_text(target.with_suffix(".json"), json.dumps({"model": args.model, "nfe": out.nfe, "reward_calls": out.reward_calls, "seed": args.seed}) + "\n")
    print(f"wrote {target}")
    return 0


BENCHMARKS = ("overhead", "value_guidance", "large_image", "cep", "hybrid", "scale")


def _bench(argv: list[str]) -> int:
    import importlib

    if not argv or argv[0] not in BENCHMARKS:
        print(f"error: bench: name one of {', '.join(BENCHMARKS)}; the rest of the line goes to that benchmark.", file=sys.stderr)
        return 2
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(f"benchmarks.{argv[0]}")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("benchmarks"):
            raise  # a dependency the benchmark needs, not a missing checkout
        print("error: bench: the benchmarks live in the repository's benchmarks/ folder; run `gen bench` from a checkout's root.", file=sys.stderr)
        return 2
    module.main(argv[1:])
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from gen.training.train import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = argparse.ArgumentParser(prog="gen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo on the bundled zoo models")
    demo.add_argument("--out", default="out/demo", help="output folder (inside the current directory)")
    demo.add_argument("--quick", action="store_true", help="fewer samples and steps (for tests)")
    sample_cmd = sub.add_parser("sample", help="sample a zoo model or a saved pipeline into a PNG grid")
    sample_cmd.add_argument("model", help="zoo name (digits, ...) or a pipeline folder")
    sample_cmd.add_argument("--class-labels", type=int, nargs="*", default=None)
    sample_cmd.add_argument("--prompt", default=None)
    sample_cmd.add_argument("--num", type=int, default=8)
    sample_cmd.add_argument("--steps", type=int, default=25)
    sample_cmd.add_argument("--guidance", type=float, default=1.0)
    sample_cmd.add_argument("--seed", type=int, default=0)
    sample_cmd.add_argument("--scale", type=int, default=4)
    sample_cmd.add_argument("--out", default="out/samples", help="output folder")
    sample_cmd.add_argument("--name", default="samples.png", help="file name inside --out")
    zoo_cmd = sub.add_parser("zoo", help="list or rebuild the bundled models")
    zoo_cmd.add_argument("action", choices=["list", "build"])
    zoo_cmd.add_argument("name", nargs="?", default="all")
    sub.add_parser("train", help="train a model (see python -m gen.training.train --help)")
    sub.add_parser("bench", help=f"run a benchmark from a checkout: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    try:
        if args.command == "zoo":
            return _zoo(args)
        if args.command == "sample":
            return _sample(args)
        from gen.demo import run_demo

        run_demo(args.out, quick=args.quick)
        return 0
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
