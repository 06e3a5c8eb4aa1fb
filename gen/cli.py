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
import sys

from gen.errors import ArgumentError, report

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
    "zoo": "examples:\n  gen zoo list\n  gen zoo build digits",
    "train": "example: gen train --data digits --condition class --resolution 16 --output-dir runs/digits",
    "bench": "example: gen bench value_guidance --samples 16 --steps 20",
}


class UsageError(ArgumentError):
    """A mistake in how the command was called (exit status 2)."""


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


def _load_for_sampling(model: str):
    """A pipeline to sample from a zoo name or a folder; non-generative zoo entries are refused by purpose."""
    import gen.zoo as zoo
    from gen.pipelines.loading import load_pipeline

    if model in zoo.available():
        item = zoo.entry(model)
        if item.purpose != "generate":
            raise UsageError(f"model: {model!r} is {item.purpose}, not a generator: {item.what}.")
        if item.rendered_by:  # its samples are embedding grids: text -> grid -> large image
            from gen.pipelines import LargeImagePipeline, TextToLargeImagePipeline

            return TextToLargeImagePipeline(zoo.load(model), LargeImagePipeline.from_pipe(zoo.load(item.rendered_by)))
        return zoo.load(model)
    return load_pipeline(model, name="model")


def _apply_lora(pipe, lora: str) -> None:
    import gen.zoo as zoo

    folder = zoo.load(lora) if lora in zoo.available() else lora
    backbone = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    from gen.core.lora import load_lora

    load_lora(backbone, folder)


def _sample(args) -> int:
    import inspect
    import json

    import torch

    from gen.demo import grid_image
    from gen.io import free_name, inside, save_image, write_text

    target = inside(args.out, args.name, "name")
    if target.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UsageError(f"name: {args.name!r} must end in .png or .jpg.")
    pipe = _load_for_sampling(args.model)
    if args.lora:
        _apply_lora(pipe, args.lora)
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
        from PIL import Image

        try:
            with Image.open(args.reference) as image:
                reference = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise UsageError(f"reference: cannot read {args.reference} as an image ({err}).") from None
        if kind == "LargeImagePipeline":  # one image of the reference's size, regenerated tile by tile
            out = pipe(reference=reference, num_images=args.num, **call)
        else:
            out = pipe(images=reference, num_images_per_embedding=args.num, **call)
    elif args.prompt is not None:
        raise UsageError(f"prompt: {args.model!r} ({kind}) takes no text; use --class-labels or neither.")
    elif kind == "ClassConditionalPipeline":
        out = pipe(class_labels=args.class_labels, **call) if args.class_labels else pipe(class_labels=None, batch_size=args.num, **call)
    elif args.class_labels:
        out = pipe(class_labels=args.class_labels, **call)
    else:
        out = pipe(batch_size=args.num, **call)
    images = out.images if isinstance(out.images, torch.Tensor) else torch.stack([torch.as_tensor(i) for i in out.images])
    save_image(target, grid_image(images, min(len(images), 8), scale=args.scale))
    side = free_name(target.with_suffix(".json"))
    write_text(side, json.dumps({"model": args.model, "image": target.name, "nfe": out.nfe, "reward_calls": out.reward_calls, "seed": args.seed}) + "\n")
    print(f"wrote {target} and {side.name}")
    return 0


BENCHMARKS = ("overhead", "value_guidance", "large_image", "large_image_fidelity", "tiling_overhead", "gpu_overhead", "cep", "hybrid", "scale")


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
    root = argparse.ArgumentParser(prog="gen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = root.add_subparsers(dest="command", required=True, metavar="{demo,sample,zoo,train,bench}")
    fmt = argparse.RawDescriptionHelpFormatter
    demo = sub.add_parser("demo", help="run the demo on the bundled zoo models", description="Run every section of the demo on the bundled zoo; writes PNGs and report.md.",
                          epilog=EXAMPLES["demo"], formatter_class=fmt)
    demo.add_argument("--out", default="out/demo", help="output folder (inside the current directory)")
    demo.add_argument("--quick", action="store_true", help="fewer samples and steps (for tests)")
    sample = sub.add_parser("sample", help="sample a zoo model or a saved pipeline into a PNG grid",
                            description="Sample a generative zoo model or a saved pipeline folder into one PNG grid (+ a JSON with the counts).",
                            epilog=EXAMPLES["sample"], formatter_class=fmt)
    sample.add_argument("model", help="zoo name (digits, digits-distilled, ihc-patches, ihc-text-grid) or a pipeline folder")
    sample.add_argument("--class-labels", type=int, nargs="+", default=None, help="class-conditional models: one image per label")
    sample.add_argument("--prompt", default=None, help="text-to-image models: the prompt")
    sample.add_argument("--reference", default=None, help="embedding-conditioned models: an image whose embedding conditions the samples")
    sample.add_argument("--lora", default=None, help="a LoRA folder written by gen train --lora-rank (or a zoo LoRA name) to load first")
    sample.add_argument("--num", type=int, default=8, help="images (per prompt or reference) when not given by --class-labels")
    sample.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own, else 25)")
    sample.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's own)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--scale", type=int, default=4, help="pixel upscaling of the grid")
    sample.add_argument("--out", default="out/samples", help="output folder")
    sample.add_argument("--name", default="samples.png", help="file name inside --out")
    zoo = sub.add_parser("zoo", help="list or rebuild the bundled models", description="List the bundled models, or retrain one from nothing.",
                         epilog=EXAMPLES["zoo"], formatter_class=fmt)
    zoo.add_argument("action", choices=["list", "build"])
    zoo.add_argument("name", nargs="?", default="all")
    sub.add_parser("train", help="train a model (gen train --help lists every option)", description="= python -m gen.training.train",
                   epilog=EXAMPLES["train"], formatter_class=fmt, add_help=False)
    sub.add_parser("bench", help=f"run a benchmark from a checkout: {', '.join(BENCHMARKS)}", description="= python -m benchmarks.NAME",
                   epilog=EXAMPLES["bench"], formatter_class=fmt, add_help=False)
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
        from gen.demo import run_demo

        run_demo(args.out, quick=args.quick)
        return 0
    except SystemExit:
        raise
    except Exception as err:
        return report(err, debug)


if __name__ == "__main__":
    sys.exit(main())
