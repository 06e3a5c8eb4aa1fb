"""The `gen` command.

    gen demo [--out out/demo]                 the main job on the bundled zoo: pictures + report.md
    gen zoo list | gen zoo build NAME         the bundled models, and the command that rebuilds each
    gen sample digits --class-labels 3 3 7    sample a zoo model or a saved pipeline folder into a PNG grid
    gen train ...                             = python -m gen.training.train ... (see gen train --help)
    gen bench NAME [...]                      = python -m benchmarks.NAME ... (from a checkout of the repository)

A mistake on the command line (a wrong flag, a missing file, a model that cannot do what was asked) gets
one line on stderr and exit status 2; a fault that is not the user's gets one line and exit status 1.
--debug shows the traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from gen.errors import ArgumentError, HelpFormatter, OneLineParser, UsageError, exit_status, report
from gen.generate import apply_lora, class_labels, load_for_sampling

EXAMPLES = {
    "demo": "example: gen demo --out out/demo",
    "sample": (
        "examples:\n"
        "  gen sample digits --class-labels 3 3 7 --steps 25\n"
        "  gen sample ihc-text-grid --prompt 'retina fundus photograph' --num 4\n"
        "  gen sample ihc-patches --reference patch.png --num 4 --guidance 2\n"
        "  gen sample runs/my-model --class-labels 0 1 2 --lora runs/my-lora/lora\n"
        "  gen sample digits --class-labels 3 --lora digits-bold-lora"
    ),
    "generate": (
        "examples:\n"
        "  gen generate digits --class-labels 0 1 2 3 4 5 6 7 8 9 --num-per-item 20 --out data/digits-synth\n"
        "  accelerate launch --num_processes 2 -m gen generate digits --count 400 --out data/digits-uncond\n"
        "  gen generate digits --class-labels 3 --num-per-item 16 --guidance svdd.json --keep-top 4 --out data/threes"
    ),
    "zoo": "examples:\n  gen zoo list\n  gen zoo build digits",
    "train": "example: gen train --data digits --condition class --resolution 16 --output-dir runs/digits",
    "bench": "example: gen bench value_guidance --samples 16 --steps 20",
}


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

    if args.name is None:
        raise UsageError(
            f"name: say which model to rebuild (retraining replaces the bundled copy and takes minutes to hours on a CPU): "
            f"gen zoo build NAME, NAME one of {', '.join(zoo.available())}, or gen zoo build all."
        )
    if args.name != "all" and args.name not in zoo.available():
        raise UsageError(f"name: no zoo model {args.name!r}; one of {', '.join(zoo.available())} (gen zoo list).")
    names = zoo.available() if args.name == "all" else [args.name]
    for name in names:
        path = build(name)
        print(f"built {name} -> {path}")
    return 0


SEED_RANGE = (0, 2**63 - 1)  # what torch.Generator.manual_seed takes without wrapping


def _check_sample_args(args):
    """Everything about a `gen sample` call that can be checked before a model is loaded or a file written;
    returns the image's path."""
    from gen.io import check_writable, inside

    for flag, value, least in (("num", args.num, 1), ("scale", args.scale, 1), ("steps", args.steps, 1)):
        if value is not None and value < least:
            raise UsageError(f"{flag}: must be >= {least}, got {value}.")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise UsageError(f"seed: must be an integer in [{SEED_RANGE[0]}, 2**63 - 1], got {args.seed}.")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise UsageError(f"guidance: must be a finite number >= 0, got {args.guidance}.")
    check_writable(args.out, "out")
    target = inside(args.out, args.name, "name")
    if target.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UsageError(f"name: {args.name!r} must end in .png or .jpg.")
    taken = [p for p in (target, target.with_suffix(".json")) if p.exists() or p.is_symlink()]
    if taken and not getattr(args, "overwrite", False):
        raise UsageError(
            f"name: {taken[0]} already exists; pass --name OTHER.png for a new grid, or --overwrite to replace {target.name} and its {target.with_suffix('.json').name}."
        )
    if any(p.is_dir() for p in taken):
        raise UsageError(f"name: {taken[0]} is a folder; pass --name OTHER.png.")
    return target


def _refuse_unused(args, kind: str, takes_text: bool) -> None:
    """A flag the model cannot use is a mistake to name, not to ignore."""
    embedding = kind in ("EmbeddingToImagePipeline", "LargeImagePipeline")
    if args.reference is not None and not embedding:
        raise UsageError(f"reference: {args.model!r} ({kind}) is not conditioned on an image; drop --reference.")
    if args.class_labels is not None and (embedding or takes_text or kind == "TextToLargeImagePipeline"):
        raise UsageError(f"class_labels: {args.model!r} ({kind}) takes no class labels; drop --class-labels.")
    if args.prompt is not None and not (takes_text or kind == "TextToLargeImagePipeline"):
        raise UsageError(f"prompt: {args.model!r} ({kind}) takes no text; use --class-labels or neither.")


def _sample(args) -> int:
    import inspect
    import json

    import torch

    from gen.demo import grid_image
    from gen.io import save_image, write_text

    target = _check_sample_args(args)
    pipe = load_for_sampling(args.model)
    from diffusers import LLaDA2Pipeline

    if isinstance(pipe, LLaDA2Pipeline):
        return _sample_tokens(args, pipe, target)
    if args.lora:
        apply_lora(pipe, args.lora)
    if not type(pipe).__module__.startswith("gen."):  # a stock diffusers pipeline: run through gen's loop so the counts come out
        from gen.pipelines.steer import steer

        pipe = steer(pipe)
    call = dict(generator=torch.Generator().manual_seed(args.seed), output_type="pt")
    if args.steps is not None or getattr(getattr(pipe, "image_pipe", pipe), "sampling_defaults", None) is None:
        call["num_inference_steps"] = 25 if args.steps is None else args.steps
    if args.guidance is not None:
        call["guidance_scale"] = args.guidance
    kind = type(pipe).__name__
    takes_text = "prompt" in inspect.signature(pipe.__call__).parameters
    _refuse_unused(args, kind, takes_text)
    labels = class_labels(pipe, args.class_labels)
    if kind == "TextToLargeImagePipeline":
        if args.prompt is None:
            raise UsageError(f"prompt: {args.model!r} makes large images from text; pass --prompt 'TEXT'.")
        out = pipe([args.prompt] * args.num, **call)
    elif takes_text:
        if args.prompt is None:
            raise UsageError(f"prompt: {args.model!r} is a text-to-image model; pass --prompt 'TEXT'.")
        out = pipe(args.prompt, num_images_per_prompt=args.num, **call)
    elif kind in ("EmbeddingToImagePipeline", "LargeImagePipeline"):
        if args.reference is None:
            raise UsageError(f"reference: {args.model!r} makes images from an image's embedding; pass --reference IMAGE (a PNG or JPEG).")
        from gen.data.files import read_image

        reference = read_image(args.reference, "reference")
        if kind == "LargeImagePipeline":  # one image of the reference's size, regenerated tile by tile
            out = pipe(reference=reference, num_images=args.num, **call)
        else:
            out = pipe(images=reference, num_images_per_embedding=args.num, **call)
    elif kind == "ClassConditionalPipeline":
        out = pipe(class_labels=labels, **call) if labels else pipe(class_labels=None, batch_size=args.num, **call)
    elif labels:
        out = pipe(class_labels=labels, **call)
    else:
        out = pipe(batch_size=args.num, **call)
    images = out.images if isinstance(out.images, torch.Tensor) else torch.stack([torch.as_tensor(i) for i in out.images])
    if not torch.isfinite(images).all():
        raise ArgumentError(
            f"model: {args.model!r} produced non-finite values (NaN or infinity){' with the LoRA ' + repr(args.lora) if args.lora else ''}; "
            "nothing was written. Check the weights (a LoRA trained to divergence?) or lower --guidance."
        )
    side = target.with_suffix(".json")
    save_image(target, grid_image(images, min(len(images), 8), scale=args.scale))
    write_text(side, json.dumps({"model": args.model, "image": target.name, "nfe": out.nfe, "reward_calls": out.reward_calls, "seed": args.seed}) + "\n")
    print(f"wrote {target} and {side.name}")
    return 0


def _sample_tokens(args, pipe, target) -> int:
    """`gen sample` of a masked-diffusion model: --num sequences (each from its own seed), rendered as an image grid
    where the folder says how (digits-mdlm), else printed as text; the counts in the side file either way."""
    import json

    import torch

    from gen.demo import grid_image
    from gen.discrete.sampling import render, sample_tokens
    from gen.io import save_image, write_text
    from gen.pipelines.steer import steer

    for flag, value in (("class_labels", args.class_labels), ("reference", args.reference), ("lora", args.lora), ("guidance", args.guidance)):
        if value is not None and value != []:
            raise UsageError(f"{flag}: {args.model!r} is a masked-diffusion model of token sequences; drop --{flag.replace('_', '-')}.")
    pipe = steer(pipe)
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num)]
    out = sample_tokens(pipe, generators, prompt=args.prompt or "", num_inference_steps=args.steps)
    images = render(pipe, out.sequences)
    side = target.with_suffix(".json")
    record = {"model": args.model, "nfe": out.nfe, "reward_calls": out.reward_calls, "seed": args.seed, "sequences": out.sequences.tolist()}
    if images is None:
        texts = pipe.tokenizer.batch_decode(out.sequences, skip_special_tokens=True) if pipe.tokenizer is not None else None
        write_text(side, json.dumps({**record, "texts": texts}) + "\n")
        print("\n".join(texts or [str(s) for s in out.sequences.tolist()]))
        print(f"wrote {side}")
        return 0
    save_image(target, grid_image(images, min(len(images), 8), scale=2 * args.scale))  # 8x8 grids: twice the 16-px digits
    write_text(side, json.dumps({**record, "image": target.name}) + "\n")
    print(f"wrote {target} and {side.name}")
    return 0


BENCHMARKS = (
    "overhead",
    "value_guidance",
    "large_image",
    "large_image_fidelity",
    "tiling_overhead",
    "gpu_overhead",
    "gpu_families",
    "cep",
    "hybrid",
    "scale",
    "demo_regimes",
    "generate",
    "ppap",
    "discrete_guidance",
)


def _bench(argv: list[str]) -> int:
    import importlib

    if not argv or argv[0] not in BENCHMARKS:
        raise UsageError(f"bench: name one of {', '.join(BENCHMARKS)}; the rest of the line goes to that benchmark.")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(f"benchmarks.{argv[0]}")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("benchmarks"):
            raise  # a dependency the benchmark needs, not a missing checkout
        raise UsageError("bench: the benchmarks live in the repository's benchmarks/ folder; run `gen bench` from a checkout's root.") from None
    module.main(argv[1:])
    return 0


def parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="gen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = root.add_subparsers(dest="command", required=True, metavar="{demo,sample,zoo,train,bench}")
    fmt = HelpFormatter
    demo = sub.add_parser(
        "demo",
        help="run the demo on the bundled zoo models",
        description="Run every section of the demo on the bundled zoo; writes PNGs and report.md.",
        epilog=EXAMPLES["demo"],
        formatter_class=fmt,
    )
    demo.add_argument("--out", default="out/demo", help="output folder (inside the current directory)")
    demo.add_argument("--quick", action="store_true", help="fewer samples and steps (for tests)")
    sample = sub.add_parser(
        "sample",
        help="sample a zoo model or a saved pipeline into a PNG grid",
        description="Sample a generative zoo model or a saved pipeline folder into one PNG grid (+ a JSON with the counts).",
        epilog=EXAMPLES["sample"],
        formatter_class=fmt,
    )
    sample.add_argument("model", help="zoo name (digits, digits-distilled, digits-mdlm, ihc-patches, ihc-text-grid) or a pipeline folder")
    sample.add_argument(
        "--class-labels", nargs="+", default=None, help="class-conditional models: one image per label (an index, or a class name the model saved)"
    )
    sample.add_argument("--prompt", default=None, help="text-to-image models: the prompt")
    sample.add_argument("--reference", default=None, help="embedding-conditioned models: an image whose embedding conditions the samples")
    sample.add_argument("--lora", default=None, help="a LoRA folder written by gen train --lora-rank (or a zoo LoRA name) to load first")
    sample.add_argument("--num", type=int, default=8, help="images (per prompt or reference) when not given by --class-labels")
    sample.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own, else 25)")
    sample.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's own)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the noise (and of every hook that draws)")
    sample.add_argument("--scale", type=int, default=4, help="pixel upscaling of the grid")
    sample.add_argument("--out", default="out/samples", help="output folder")
    sample.add_argument("--name", default="samples.png", help="file name inside --out (with its counts in the same name .json)")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --name grid and its .json (without it, an existing name is refused)")
    zoo = sub.add_parser(
        "zoo",
        help="list or rebuild the bundled models",
        description="List the bundled models, or retrain one from nothing.",
        epilog=EXAMPLES["zoo"],
        formatter_class=fmt,
    )
    zoo.add_argument("action", choices=["list", "build"])
    zoo.add_argument("name", nargs="?", default=None, help="build: the model to retrain, or 'all'")
    generate = sub.add_parser(
        "generate",
        help="a data set of samples: many items, any number of processes, resumable (see --help)",
        description=(
            "Draw --num-per-item samples of every item into an image folder with metadata.jsonl (the Hugging Face layout), "
            "on one process or under `accelerate launch -m gen generate`; the same command again finishes a killed run."
        ),
        epilog=EXAMPLES["generate"],
        formatter_class=fmt,
    )
    generate.add_argument("model", help="a zoo name or a saved pipeline folder")
    generate.add_argument("--out", required=True, help="the output folder (new, empty, or this same run's)")
    items = generate.add_argument_group("items (exactly one)")
    items.add_argument("--prompts", default=None, help="text-to-image models: a text file (one prompt per line), or JSONL/CSV with a 'prompt' column")
    items.add_argument("--class-labels", nargs="+", default=None, help="class-conditional models: labels (indices or the model's class names)")
    items.add_argument("--references", default=None, help="embedding-conditioned models: a folder of reference images")
    items.add_argument("--count", type=int, default=None, help="unconditional models: how many items")
    generate.add_argument("--num-per-item", type=int, default=1, help="samples of each item (>= 1)")
    generate.add_argument("--batch-size", type=int, default=8, help="samples per pipeline call (>= 1)")
    generate.add_argument("--seed", type=int, default=0, help="the run's seed: sample j of item i draws from a seed mixed from it, i and j")
    generate.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own)")
    generate.add_argument(
        "--guidance", default=None, help="a classifier-free guidance scale, or a JSON file of hooks (SVDD, BestOfN, FKSteering, CADS) with a named reward"
    )
    generate.add_argument("--keep-top", type=int, default=None, help="keep the K best samples of each item by the --guidance config's reward")
    generate.add_argument("--min-reward", type=float, default=None, help="keep samples whose reward is at least this")
    generate.add_argument("--lora", default=None, help="a LoRA folder (or zoo LoRA name) to load first")
    sub.add_parser(
        "train",
        help="train a model (gen train --help lists every option)",
        description="= python -m gen.training.train",
        epilog=EXAMPLES["train"],
        formatter_class=fmt,
        add_help=False,
    )
    sub.add_parser(
        "bench",
        help=f"run a benchmark from a checkout: {', '.join(BENCHMARKS)}",
        description="= python -m benchmarks.NAME",
        epilog=EXAMPLES["bench"],
        formatter_class=fmt,
        add_help=False,
    )
    return root


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if argv and argv[0] == "train":
        from gen.training.train import main as train_main

        return train_main(argv[1:] + (["--debug"] if debug else []))
    try:
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        args = parser().parse_args(argv)
        if args.command == "zoo":
            return _zoo(args)
        if args.command == "sample":
            return _sample(args)
        if args.command == "generate":
            from gen.generate import run

            if args.steps is not None and args.steps < 1:
                raise UsageError(f"steps: must be >= 1, got {args.steps}.")
            if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
                raise UsageError(f"seed: must be an integer in [{SEED_RANGE[0]}, 2**63 - 1], got {args.seed}.")
            return run(args)
        from gen.demo import run_demo

        run_demo(args.out, quick=args.quick)
        return 0
    except SystemExit as stop:  # argparse's exit (--help, or a one-line mistake): its status, as a return value
        return exit_status(stop)
    except Exception as err:
        return report(err, debug)


if __name__ == "__main__":
    sys.exit(main())
