"""Training with accelerate: diffusion models (+CEP, corruption, LoRA), value networks (SVDD-MC),
consistency distillation, SimCLR encoders."""

from __future__ import annotations

import torch


def make_accelerator(**kwargs):
    """An accelerate Accelerator that also forms a process group on machines without a GPU (accelerate
    only sets up gloo for `torchrun` on CPU when asked for `cpu=True`), and takes a new mixed precision in a
    process that trained before with another."""
    from accelerate import Accelerator

    import os

    from accelerate.state import AcceleratorState

    has_device = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or torch.backends.mps.is_available()
    kwargs.setdefault("cpu", not has_device)
    wanted, state = kwargs.get("mixed_precision"), AcceleratorState._shared_state
    if state and wanted is not None and state.get("_mixed_precision") != wanted and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # One process running several trainings in turn (a notebook, a benchmark, the zoo's recipes), each with its
        # own precision: accelerate keeps the first run's and refuses a change, so its state starts afresh.
        AcceleratorState._reset_state()
    return Accelerator(**kwargs)


def dataclass_cli(config_class, run, prog: str, doc: str, argv=None) -> int:
    """`python -m ...` entry point: one flag per field of a config dataclass (both spellings, --config FILE;
    see gen.training.options); clear errors exit with 2."""
    import sys

    from gen.errors import exit_status, report
    from gen.training.options import parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        run(parse_config(config_class, argv, prog, doc))
    except SystemExit as stop:  # argparse's exit (--help, or a one-line mistake): its status, as a return value
        return exit_status(stop)
    except Exception as err:
        return report(err, debug)
    return 0
