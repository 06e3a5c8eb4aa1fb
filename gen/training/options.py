"""Trainer options as dataclasses, and their command lines.

Every trainer's config is a dataclass whose fields are its flags, each spelled both ways (``--output-dir``
and diffusers' ``--output_dir``), booleans as ``--flag/--no-flag``; a ``--config FILE`` (JSON, keys in either
spelling) sets defaults that flags given on the command line override. `LoopOptions` holds the options of
the loop all trainers share (gen.training.loop), with the names diffusers' training scripts use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gen.errors import ArgumentError, HelpFormatter, MissingFileError, OneLineParser

MIXED_PRECISION = ("no", "fp16", "bf16")


def option(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class LoopOptions:
    max_train_steps: int = option(1000, "optimisation steps")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimisation step")
    mixed_precision: str | None = option(None, f"one of {MIXED_PRECISION}; default: the accelerate config's (accelerate config / launch --mixed_precision)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    checkpointing_steps: int = option(500, "save a checkpoint every N steps (0: never)")
    checkpoints_total_limit: int = option(2, "keep at most this many checkpoints (>= 1)")
    resume: str | None = option(None, "'latest' or a checkpoint folder")
    overwrite: bool = option(False, "replace an earlier run in --output-dir (without it, a second run there needs --resume)")
    report_to: str = option("none", "accelerate tracker: none, tensorboard, wandb, ...")
    seed: int = option(0, "seed for weights, noise, data order")
    log_every: int = option(25, "log the loss every N steps")
    progress: bool = option(True, "show a progress bar")
    config: str | None = option(None, "a JSON file of options (keys as the flags, either spelling); flags given on the command line win")


def check_loop_options(options: LoopOptions) -> None:
    """The shared loop's options, checked before anything is loaded or written."""
    from gen.training.checkpoints import verify

    if not 0 <= options.seed <= 2**63 - 1:
        raise ArgumentError(f"seed: must be an integer in [0, 2**63 - 1], got {options.seed}.")
    for name in ("max_train_steps", "gradient_accumulation_steps", "log_every"):
        if getattr(options, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(options, name)}.")
    if not math.isfinite(options.max_grad_norm) or options.max_grad_norm < 0:
        raise ArgumentError(f"max_grad_norm: must be a finite number >= 0 (0: off), got {options.max_grad_norm}.")
    if not isinstance(options.checkpoints_total_limit, int) or options.checkpoints_total_limit < 1:
        raise ArgumentError(f"checkpoints_total_limit: must be an integer >= 1 (how many checkpoints to keep), got {options.checkpoints_total_limit!r}.")
    if options.checkpointing_steps < 0:
        raise ArgumentError(f"checkpointing_steps: must be >= 0 (0: no checkpoints), got {options.checkpointing_steps}.")
    if options.mixed_precision is not None and options.mixed_precision not in MIXED_PRECISION:
        raise ArgumentError(f"mixed_precision: one of {MIXED_PRECISION}, got {options.mixed_precision!r}.")
    check_trackers(options.report_to)
    if options.resume not in (None, "latest"):
        verify(options.resume, "resume")


def check_trackers(report_to: str) -> None:
    """Every tracker named in --report-to is one accelerate knows and its package is installed."""
    import accelerate.utils as utils
    from accelerate.utils import LoggerType

    if report_to == "none":
        return
    known = {t.value for t in LoggerType}
    for name in [n.strip() for n in report_to.split(",") if n.strip()]:
        if name not in known:
            raise ArgumentError(f"report_to: unknown tracker {name!r}; one of {sorted(known)} or 'none'.")
        available = getattr(utils, f"is_{name}_available", None)
        if available is not None and not available():
            raise ArgumentError(f"report_to: the {name} tracker needs its package; pip install {name.replace('_', '-')} (or pass --report-to none).")


_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float}


def config_parser(config_class, prog: str, doc: str, required: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=doc, formatter_class=HelpFormatter)
    shared = {f.name for f in dataclasses.fields(LoopOptions)}
    fields = dataclasses.fields(config_class)
    for f in [f for f in fields if f.name not in shared] + [f for f in fields if f.name in shared]:  # the trainer's own flags first
        names = (f.name, *f.metadata.get("aliases", ()))  # an alias: another script's name for the same option (--lora-layers)
        flags = list(dict.fromkeys(flag for name in names for flag in ("--" + name.replace("_", "-"), "--" + name)))
        help = f.metadata.get("help")
        if f.type in ("bool", "bool | None") or isinstance(f.default, bool):
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help)
            continue
        p.add_argument(*flags, dest=f.name, type=_TYPES.get(str(f.type), str), default=f.default, required=f.name in required, help=help)
    return p


def parse_config(config_class, argv, prog: str, doc: str, required: tuple[str, ...] = ()):
    """Flags, over the values of a --config file, over the defaults. The file is read first (by a parser
    that knows only --config), so it can carry every option, the required ones included."""
    argv = list(argv) if argv is not None else None
    p = config_parser(config_class, prog, doc, required)
    only_config = argparse.ArgumentParser(add_help=False)
    only_config.add_argument("--config", default=None)
    first, _ = only_config.parse_known_args(argv)
    if first.config:
        from_file = read_config_file(config_class, first.config)
        p.set_defaults(**from_file)
        for action in p._actions:  # a required flag the file gives is no longer required on the command line
            if action.dest in from_file:
                action.required = False
    return config_class(**vars(p.parse_args(argv)))


def read_config_file(config_class, path: str) -> dict:
    names = {f.name for f in dataclasses.fields(config_class)}
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MissingFileError(f"config: no file at {path}.") from None
    except (OSError, ValueError) as err:
        raise ArgumentError(f"config: {path} is not a JSON object of options ({err}).") from None
    if not isinstance(values, dict):
        raise ArgumentError(f"config: {path} must hold a JSON object of options, got {type(values).__name__}.")
    aliases = {alias: f.name for f in dataclasses.fields(config_class) for alias in f.metadata.get("aliases", ())}
    values = {aliases.get(k.replace("-", "_"), k.replace("-", "_")): v for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ArgumentError(f"config: {path} sets unknown options {unknown}; see --help.")
    kinds = {f.name: str(f.type) for f in dataclasses.fields(config_class)}
    for key, value in values.items():
        check_config_value(key, value, kinds[key], path)
    return values


_JSON_KINDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}


def check_config_value(key: str, value, kind: str, path: str) -> None:
    """A config file's value has its option's type exactly: a boolean is JSON true/false (not "false"), a
    count an integer (not 2.5, not 1e3), a number finite, null only where the option allows none."""
    optional = kind.endswith("| None")
    base = kind.replace("| None", "").strip()
    if value is None:
        if optional:
            return
        raise ArgumentError(f"{key}: {path} sets it to null, but it needs {_JSON_KINDS.get(base, base)}; remove the key to take the default.")
    if base == "int" and isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ArgumentError(f"{key}: {path} sets it to {value}, beyond any count gen can use (at most 2**63 - 1).")
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "str": isinstance(value, str),
    }.get(base, True)
    if not ok:
        hint = " (write true or false, without quotes)" if base == "bool" else ""
        raise ArgumentError(f"{key}: {path} sets it to {json.dumps(value)}, but it needs {_JSON_KINDS.get(base, base)}{hint}.")
