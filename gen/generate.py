"""`gen generate`: a data set of samples. Many items, any number of processes, the same images, resumable.

    gen generate zoo:digits --class-labels 0 1 2 3 --num-per-item 16 --out data/digits
    accelerate launch --num_processes 2 -m gen generate zoo:digits --count 1000 --out data/digits-uncond
    gen generate MODEL --prompts prompts.jsonl --guidance svdd.json --num-per-item 8 --keep-top 2 --out data/best

Items come from `--prompts` (a text file, one per line, or a JSONL/CSV with a `prompt` column; other columns are
kept), `--class-labels`, `--references` (a folder of images, for embedding models) or `--count` (unconditional
models). Every sample (item i, draw j) has its own seed, mixed from `--seed`, i and j, and its own generator,
so its noise is the same whatever batch or process it lands in; batches are cut from the global list of items
(the same for any number of processes) and dealt to the processes in turn, so a run on 1 or N processes
writes the same bytes.

The output is an image folder in the Hugging Face layout: `NNNNNN-J.png` and `metadata.jsonl` (file name, the
item's prompt / label / reference and kept columns, seed, steps, guidance, hooks, NFE, reward calls, the reward
where one was used), which `datasets.load_dataset("imagefolder", data_dir=DIR)` and `gen train --data DIR`
read. Each process writes an image atomically, then appends its line to its own shard under `.gen-generate/`;
the main process merges the shards when every process is done. The run's settings are recorded in the
folder: the same command again (after a kill, at any moment, on any number of processes) finishes the job
with nothing missing, nothing twice and no finished image rewritten; another command into it is refused.

`--guidance` is a classifier-free guidance scale (as in `gen sample`) or a JSON file naming hooks:
``{"hook": "SVDD", "num_candidates": 4, "reward": {"name": "jpeg_compressibility"}}`` (or a list of them;
hooks: SVDD, BestOfN, FKSteering, CADS; rewards: jpeg_compressibility, classifier_log_prob with a classifier
such as "zoo:digits-classifier" and a target, brightness). `--keep-top K` keeps the K best of an item's
samples by that reward, `--min-reward X` those at or above X; the others are moved to `.gen-generate/dropped/`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gen.errors import ArgumentError, UsageError

STATE = ".gen-generate"  # shards, settings, dropped samples: hidden from the imagefolder builder
KIND = "generate"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Item:
    """One thing to draw samples of: a prompt, a class label, a reference image, or nothing (unconditional)."""

    index: int
    kind: str  # "prompt", "label", "reference", "none"
    value: object = None
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {**self.extra, **({self.kind: self.value} if self.kind != "none" else {})}


def sample_seed(seed: int, item: int, draw: int) -> int:
    """The seed of draw j of item i: a 64-bit mix (splitmix64) of the run's seed, i and j, below 2**63."""
    value = (seed * 0x9E3779B97F4A7C15 + item * 0xBF58476D1CE4E5B9 + draw * 0x94D049BB133111EB) % 2**64
    value ^= value >> 30
    value = (value * 0xBF58476D1CE4E5B9) % 2**64
    value ^= value >> 27
    value = (value * 0x94D049BB133111EB) % 2**64
    return (value ^ (value >> 31)) % 2**63


def read_items(prompts=None, class_labels=None, references=None, count=None) -> list[Item]:
    """The run's items from exactly one source; a clear error, before any work, for an empty or unreadable
    file, a missing column, an empty folder."""
    given = [name for name, value in (("prompts", prompts), ("class_labels", class_labels), ("references", references), ("count", count)) if value is not None]
    if len(given) != 1:
        raise ArgumentError(
            f"items: give exactly one of --prompts, --class-labels, --references, --count; got {', '.join('--' + g.replace('_', '-') for g in given) or 'none'}."
        )
    if count is not None:
        if count < 1:
            raise ArgumentError(f"count: must be >= 1, got {count}.")
        return [Item(i, "none") for i in range(count)]
    if class_labels is not None:
        return [Item(i, "label", label) for i, label in enumerate(class_labels)]
    if references is not None:
        folder = Path(references)
        if not folder.is_dir():
            raise ArgumentError(f"references: {folder} is not a folder; give a folder of images.")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ArgumentError(f"references: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        return [Item(i, "reference", p.name, {"reference_path": str(p.resolve())}) for i, p in enumerate(files)]
    return _read_prompts(Path(prompts))


def _read_prompts(path: Path) -> list[Item]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ArgumentError(f"prompts: cannot read {path} ({getattr(err, 'strerror', None) or err}); give a UTF-8 text, JSONL or CSV file.") from None
    rows: list[dict] = []
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ArgumentError(f"prompts: {path} line {number} is not JSON ({err}).") from None
            if not isinstance(row, dict):
                raise ArgumentError(f"prompts: {path} line {number} is not a JSON object.")
            rows.append(row)
    elif path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        rows = [{"prompt": line.strip()} for line in text.splitlines() if line.strip()]
    if not rows:
        raise ArgumentError(f"prompts: {path} holds no prompts.")
    missing = next((n for n, row in enumerate(rows, 1) if not isinstance(row.get("prompt"), str) or not row["prompt"].strip()), None)
    if missing is not None:
        raise ArgumentError(
            f"prompts: row {missing} of {path} has no 'prompt' (columns: {sorted(rows[missing - 1])}); every row needs a non-empty prompt column."
        )
    return [Item(i, "prompt", row["prompt"], {k: v for k, v in row.items() if k not in ("prompt", "file_name")}) for i, row in enumerate(rows)]


def batches(items: list[Item], num_per_item: int, batch_size: int) -> list[list[tuple[Item, int]]]:
    """The run's batches of (item, draw): consecutive draws of consecutive items, at most batch_size each,
    an item's draws never split unless it alone holds more (the same cut for any number of processes)."""
    out: list[list[tuple[Item, int]]] = []
    current: list[tuple[Item, int]] = []
    for item in items:
        draws = [(item, j) for j in range(num_per_item)]
        if current and len(current) + len(draws) > batch_size:
            out.append(current)
            current = []
        while len(draws) > batch_size:
            out.append(draws[:batch_size])
            draws = draws[batch_size:]
        current += draws
    if current:
        out.append(current)
    return out


def file_name(item: Item, draw: int) -> str:
    return f"{item.index:06d}-{draw}.png"


# -- the model --------------------------------------------------------------------------------------------------------
def load_for_sampling(model: str):
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
    refuse_checkpoint(Path(model))
    return load_pipeline(model, name="model")


def refuse_checkpoint(folder: Path) -> None:
    """A training checkpoint is not a pipeline: name the command that turns it into one."""
    import json

    manifest = folder / "manifest.json"
    if not folder.is_dir() or (folder / "model_index.json").exists() or not manifest.is_file():
        return
    try:
        step = int(json.loads(manifest.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    run = folder.resolve().parent.parent
    config = run / "train_config.json"
    command = (
        f"gen train --config {config} --resume {folder} --max-train-steps {step}"
        if config.is_file()
        else f"gen train <the run's flags> --output-dir {run} --resume {folder} --max-train-steps {step}"
    )
    raise UsageError(
        f"model: {folder} is a training checkpoint (step {step}), not a pipeline; turn it into one in {run} with: {command} "
        f"(or finish the run: the same with --max-train-steps of the full run)."
    )


def apply_lora(pipe, lora: str) -> None:
    import gen.zoo as zoo

    folder = zoo.load(lora) if lora in zoo.available() else lora
    backbone = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    from gen.core.lora import load_lora

    load_lora(backbone, folder)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):  # trained with --train-text-encoder --lora-rank
        if (Path(folder) / name / "adapter_config.json").is_file():
            if getattr(pipe, name, None) is None:
                raise UsageError(f"lora: {folder} adapts a {name}, which this pipeline lacks; load the LoRA into the model it was trained on.")
            load_lora(getattr(pipe, name), Path(folder) / name)


def class_labels(pipe, labels: list[str] | None):
    """--class-labels as the model's indices: integers, or the class names saved with the model."""
    if labels is None:
        return None
    names = list(getattr(getattr(pipe, "config", None), "class_names", None) or [])
    result = []
    for label in labels:
        if label in names:
            result.append(names.index(label))
        elif label.lstrip("-").isdigit():
            result.append(int(label))
        else:
            known = f"one of {names} or an index" if names else "integers (the model saved no class names)"
            raise UsageError(f"class_labels: {label!r} is not a class of this model; give {known}.")
    return result


# -- guidance from a config ------------------------------------------------------------------------------------------
HOOKS = ("SVDD", "BestOfN", "FKSteering", "CADS")
REWARDS = ("jpeg_compressibility", "classifier_log_prob", "brightness")


def read_guidance(value: str | None) -> tuple[float | None, list[dict]]:
    """--guidance: a number (the CFG scale) or a JSON file of hooks (checked here, before any work)."""
    if value is None:
        return None, []
    try:
        scale = float(value)
    except ValueError:
        scale = None
    if scale is not None:
        if not (math.isfinite(scale) and scale >= 0):
            raise ArgumentError(f"guidance: a scale must be a finite number >= 0, got {value}.")
        return scale, []
    path = Path(value)
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise ArgumentError(f"guidance: {value!r} is neither a number (a CFG scale) nor a readable JSON file ({err.strerror}).") from None
    except ValueError as err:
        raise ArgumentError(f"guidance: {path} is not JSON ({err}).") from None
    specs = config if isinstance(config, list) else [config]
    for spec in specs:
        build_hook(spec)
    return None, specs


def build_reward(spec):
    """A reward from its config: a name, or {"name": ..., arguments}; built once per run (a classifier loads once)."""
    return _reward(json.dumps(spec, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _reward(key: str):
    from gen.guidance import rewards

    spec = json.loads(key)
    spec = {"name": spec} if isinstance(spec, str) else dict(spec or {})
    name = spec.pop("name", None)
    if name not in REWARDS:
        raise ArgumentError(f"guidance: reward {name!r} is not one of {REWARDS}.")
    if name == "brightness":
        if spec:
            raise ArgumentError(f"guidance: reward brightness takes no arguments, got {sorted(spec)}.")
        return lambda images: images.float().mean(dim=tuple(range(1, images.ndim)))
    if name == "classifier_log_prob":
        unknown = set(spec) - {"classifier", "target"}
        if unknown or "classifier" not in spec or "target" not in spec:
            raise ArgumentError(f"guidance: reward classifier_log_prob takes 'classifier' (e.g. \"zoo:digits-classifier\") and 'target', got {sorted(spec)}.")
        import gen.zoo as zoo
        from gen.plugins import is_named, load_named

        name = spec["classifier"]
        if not is_named(name) and name not in zoo.available():
            raise ArgumentError(
                f"guidance: classifier {name!r} is not a zoo classifier; one of {[n for n in zoo.available() if 'classifier' in n]} (or zoo:NAME)."
            )
        return rewards.classifier_log_prob(load_named(name, "classifier") if is_named(name) else zoo.load(name), spec["target"])
    try:
        return getattr(rewards, name)(**spec)
    except TypeError as err:
        raise ArgumentError(f"guidance: reward {name}: {err}.") from None


def build_hook(spec, render=None):
    """A hook from its config {"hook": NAME, "reward": ..., arguments}; unknown names and arguments are refused.
    `render`: for a model of token sequences, how its sequences become the images the reward scores."""
    import inspect

    from gen.conditioning import CADS
    from gen.guidance import SVDD, BestOfN, FKSteering, PosteriorMeanValue

    if not isinstance(spec, dict) or "hook" not in spec:
        raise ArgumentError(f'guidance: each entry needs a "hook" (one of {HOOKS}), got {spec!r}.')
    spec = dict(spec)
    name = spec.pop("hook")
    classes = {"SVDD": SVDD, "BestOfN": BestOfN, "FKSteering": FKSteering, "CADS": CADS}
    if name not in classes:
        raise ArgumentError(f"guidance: hook {name!r} is not one of {HOOKS}.")
    cls = classes[name]
    parameters = set(inspect.signature(cls).parameters) - {"value", "reward"}
    unknown = set(spec) - parameters - {"reward"}
    if unknown:
        raise ArgumentError(f"guidance: {name} takes {sorted(parameters | ({'reward'} if name != 'CADS' else set()))}, not {sorted(unknown)}.")
    reward_spec = spec.pop("reward", None)
    if name != "CADS" and reward_spec is None:
        raise ArgumentError(f'guidance: {name} needs a "reward" (one of {REWARDS}).')
    reward = build_reward(reward_spec) if reward_spec is not None else None
    if render is not None and reward is not None:
        on_images = reward
        reward = lambda ids: on_images(render(ids))  # noqa: E731  (the hooks score token states; the reward reads images)
    if name == "SVDD":
        return SVDD(PosteriorMeanValue(reward), **spec), reward
    if name == "CADS":
        return cls(**spec), None
    return cls(reward, **spec), reward


# -- the run ---------------------------------------------------------------------------------------------------------
def settings(args, items: list[Item], guidance: list[dict]) -> dict:
    """What makes two runs the same run: resuming needs all of it equal (batch size and processes may differ)."""
    digest = hashlib.sha256(json.dumps([item.record() for item in items], sort_keys=True, default=str).encode()).hexdigest()
    return {
        "model": args.model,
        "lora": args.lora,
        "items": len(items),
        "items_sha256": digest,
        "num_per_item": args.num_per_item,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance if not guidance else guidance,
        "keep_top": args.keep_top,
        "min_reward": args.min_reward,
    }


def _shard_rows(out: Path) -> list[dict]:
    rows = []
    for shard in sorted((out / STATE).glob("shard-*.jsonl")):
        for line in shard.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill: its image is redone
                continue
    return rows


def _append(path: Path, *rows: dict) -> None:
    """Complete lines, flushed to disk (a kill mid-write leaves at most a partial last line, which is skipped:
    its image counts as unfinished and is drawn again)."""
    with open(path, "a") as handle:
        handle.write("".join(json.dumps(row, default=str) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def prepare_folder(out: Path, wanted: dict) -> None:
    """Main process: take a new or empty folder, or resume the run recorded in it; refuse anything else."""
    from gen.io import RUN_LOCK, RUN_MARKER, check_writable, lock_output_dir, write_json

    check_writable(out, "out")
    recorded = out / STATE / "settings.json"
    if out.is_dir() and any(p.name not in (RUN_LOCK,) for p in out.iterdir()):
        marker = out / RUN_MARKER
        kind = json.loads(marker.read_text()).get("kind") if marker.is_file() else None
        if kind != KIND or not recorded.is_file():
            raise ArgumentError(f"out: {out} holds files a gen generate run did not write; choose a new or empty folder.")
        previous = json.loads(recorded.read_text())
        changed = sorted(k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k))
        if changed:
            raise ArgumentError(
                f"out: {out} holds a gen generate run with other settings ({', '.join(f'{k}: {previous.get(k)!r}' for k in changed)}); "
                "run the same command to finish it, or choose another folder."
            )
    lock_output_dir(out, "out")
    (out / STATE).mkdir(exist_ok=True)
    write_json(out / RUN_MARKER, {"kind": KIND})
    if not recorded.is_file():
        write_json(recorded, wanted)


def run(args) -> int:
    """`gen generate` on this process (see the module docstring)."""
    from gen.training import make_accelerator

    from gen.io import release_output_dir, save_image

    if args.num_per_item < 1:
        raise ArgumentError(f"num_per_item: must be >= 1, got {args.num_per_item}.")
    if args.batch_size < 1:
        raise ArgumentError(f"batch_size: must be >= 1, got {args.batch_size}.")
    if args.keep_top is not None and not 1 <= args.keep_top <= args.num_per_item:
        raise ArgumentError(f"keep_top: must lie in [1, --num-per-item={args.num_per_item}], got {args.keep_top}.")
    scale, hook_specs = read_guidance(args.guidance)
    if (args.keep_top is not None or args.min_reward is not None) and not any(s.get("reward") for s in hook_specs):
        raise ArgumentError("keep_top, min_reward: rank samples by a reward; name one in a --guidance config.")
    items = read_items(args.prompts, args.class_labels, args.references, args.count)
    out = Path(args.out)
    wanted = settings(args, items, hook_specs)
    state = make_accelerator()  # under torchrun on CPUs too (gloo)
    if state.is_main_process:
        prepare_folder(out, wanted)
    state.wait_for_everyone()
    pipe = load_for_sampling(args.model)
    if args.lora:
        apply_lora(pipe, args.lora)
    if not type(pipe).__module__.startswith("gen."):
        from gen.pipelines.steer import steer

        pipe = steer(pipe)
    pipe = pipe.to(state.device)
    pipe.set_progress_bar_config(disable=True)
    if items[0].kind == "label":
        labels = class_labels(pipe, [str(i.value) for i in items])
        items = [Item(i.index, "label", label, {"class_name": str(i.value)} if str(i.value) != str(label) else {}) for i, label in zip(items, labels)]
    done = {row["file_name"] for row in _shard_rows(out)} | {row["file_name"] for row in _dropped(out)}
    work = batches(items, args.num_per_item, args.batch_size)
    mine = [b for n, b in enumerate(work) if n % state.num_processes == state.process_index]
    shard = out / STATE / f"shard-{state.process_index}.jsonl"
    total = len(items) * args.num_per_item
    bar = _Progress(out, total, state.is_main_process)
    for batch in mine:
        todo = [(item, j) for item, j in batch if file_name(item, j) not in done]
        if not todo:
            continue
        # the whole batch is drawn (its composition fixes what hooks that draw see), the finished files skipped
        images, counts, rewards = _draw(pipe, batch, args, scale, hook_specs, state.device)
        rows = []
        for k, (item, j) in enumerate(batch):
            name = file_name(item, j)
            if name in done:
                continue
            save_image(out / name, _to_pil(images[k]))  # atomically, before its line: a line means a finished image
            row = {
                "file_name": name,
                **item.record(),
                "item": item.index,
                "draw": j,
                "seed": sample_seed(args.seed, item.index, j),
                "steps": args.steps,
                "guidance": scale,
                "hooks": [s.get("hook") for s in hook_specs],
                **counts,
            }
            if rewards is not None:
                row["reward"] = float(rewards[k])
            rows.append(row)
        _append(shard, *rows)
        bar.update()
    state.wait_for_everyone()
    if state.is_main_process:
        kept = _merge(out, args)
        bar.close()
        release_output_dir(out)
        print(f"wrote {kept} images and metadata.jsonl to {out}")
    return 0


def _dropped(out: Path) -> list[dict]:
    path = out / STATE / "dropped.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _draw(pipe, batch, args, scale, hook_specs, device):
    """One pipeline call over a batch of (item, draw), each sample with its own generator."""
    import inspect

    import torch
    from diffusers import LLaDA2Pipeline

    if isinstance(pipe, LLaDA2Pipeline):
        return _draw_tokens(pipe, batch, args, scale, hook_specs, device)

    built = [build_hook(spec) for spec in hook_specs]
    hooks = [hook for hook, _ in built]
    reward = next((r for _, r in built if r is not None), None)
    generators = [torch.Generator().manual_seed(sample_seed(args.seed, item.index, j)) for item, j in batch]
    call = dict(generator=generators, output_type="pt", hooks=hooks)
    if args.steps is not None:
        call["num_inference_steps"] = args.steps
    if scale is not None:
        call["guidance_scale"] = scale
    kind = batch[0][0].kind
    parameters = inspect.signature(pipe.__call__).parameters
    if kind == "prompt":
        out = pipe([item.value for item, _ in batch], **call)
    elif kind == "label":
        out = pipe(class_labels=[item.value for item, _ in batch], **call)
    elif kind == "reference":
        from gen.data.files import read_image

        out = pipe(images=[read_image(item.extra["reference_path"], "references") for item, _ in batch], **call)
    elif "batch_size" in parameters:
        out = pipe(batch_size=len(batch), **call)
    else:
        raise ArgumentError(f"count: {args.model!r} ({type(pipe).__name__}) is conditional; give --prompts, --class-labels or --references.")
    images = out.images if isinstance(out.images, torch.Tensor) else torch.stack([torch.as_tensor(i) for i in out.images])
    if not torch.isfinite(images).all():
        raise ArgumentError(f"model: {args.model!r} produced non-finite values; nothing more was written. Check the weights or lower --guidance.")
    counts = {"nfe": out.nfe, "reward_calls": out.reward_calls}
    rewards = reward(images.float().to(device)).cpu() if reward is not None else None
    return images.cpu(), counts, rewards


def _draw_tokens(pipe, batch, args, scale, hook_specs, device):
    """A masked-diffusion model: each draw sampled on its own (its seed alone decides it) and rendered as an image."""
    import torch

    from gen.discrete.sampling import render, sample_tokens

    if getattr(pipe, "gen_sampling", {}).get("render") is None:
        raise ArgumentError(f"model: {args.model!r} samples text, and gen generate writes images; sample it with the pipeline itself (output_type='text').")
    if scale is not None:
        raise ArgumentError(f"guidance: {args.model!r} is a masked-diffusion model and takes no guidance scale; give a JSON file of hooks, or nothing.")
    kind = batch[0][0].kind
    if kind not in ("none", "prompt"):
        raise ArgumentError(f"items: {args.model!r} draws token sequences from a text prompt or from nothing; give --count N or --prompts.")
    built = [build_hook(spec, render=lambda ids: render(pipe, ids)) for spec in hook_specs]
    hooks, reward = [hook for hook, _ in built], next((r for _, r in built if r is not None), None)
    images, nfe, reward_calls = [], 0.0, 0.0
    for item, j in batch:
        generator = torch.Generator().manual_seed(sample_seed(args.seed, item.index, j))
        out = sample_tokens(pipe, [generator], hooks, prompt=item.value if kind == "prompt" else "", num_inference_steps=args.steps)
        images.append(render(pipe, out.sequences))
        nfe, reward_calls = nfe + out.nfe, reward_calls + out.reward_calls
    images = torch.cat(images)
    image_reward = next((build_reward(spec["reward"]) for spec in hook_specs if spec.get("reward") is not None), None)
    rewards = image_reward(images.float().to(device)).cpu() if reward is not None and image_reward is not None else None
    return images.cpu(), {"nfe": nfe / len(batch), "reward_calls": reward_calls / len(batch)}, rewards


def _to_pil(image):
    import numpy as np
    from PIL import Image

    array = (image.float().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _merge(out: Path, args) -> int:
    """Main process, after every process: metadata.jsonl (atomically) from the shards, each image once, in
    item order; --keep-top / --min-reward move the others to .gen-generate/dropped/ (once)."""
    from gen.io import write_text

    dropped = {row["file_name"] for row in _dropped(out)}
    rows = {row["file_name"]: row for row in _shard_rows(out) if row["file_name"] not in dropped}
    by_item: dict[int, list[dict]] = {}
    for row in rows.values():
        by_item.setdefault(row["item"], []).append(row)
    kept, drop = [], []
    for index in sorted(by_item):
        group = sorted(by_item[index], key=lambda r: r["draw"])
        if args.min_reward is not None:
            drop += [r for r in group if r["reward"] < args.min_reward]
            group = [r for r in group if r["reward"] >= args.min_reward]
        if args.keep_top is not None:
            ranked = sorted(group, key=lambda r: (-r["reward"], r["draw"]))
            drop += ranked[args.keep_top :]
            group = sorted(ranked[: args.keep_top], key=lambda r: r["draw"])
        kept += group
    if drop:
        folder = out / STATE / "dropped"
        folder.mkdir(exist_ok=True)
        for row in drop:
            if (out / row["file_name"]).exists():
                os.replace(out / row["file_name"], folder / row["file_name"])
            _append(out / STATE / "dropped.jsonl", row)
    write_text(out / "metadata.jsonl", "".join(json.dumps(row, default=str) + "\n" for row in kept))
    return len(kept)


class _Progress:
    """One bar on the main process over all the run's samples, counted from every process's shard (only the
    lines appended since the last look are read), with samples per second."""

    def __init__(self, out: Path, total: int, main: bool):
        self.folder, self.main = out / STATE, main
        self.bar, self.offsets, self.count = None, {}, 0
        if main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="generate", unit="img", initial=self._count(), dynamic_ncols=True)

    def _count(self) -> int:
        for shard in self.folder.glob("shard-*.jsonl"):
            with open(shard, "rb") as handle:
                handle.seek(self.offsets.get(shard, 0))
                data = handle.read()
            complete = data.rfind(b"\n") + 1
            self.count += data[:complete].count(b"\n")
            self.offsets[shard] = self.offsets.get(shard, 0) + complete
        return self.count

    def update(self):
        if self.bar is not None:
            self.bar.n = self._count()
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.update()
            self.bar.close()
