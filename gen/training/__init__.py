"""Training with accelerate: diffusion models (+CEP, corruption, LoRA), value networks (SVDD-MC),
consistency distillation, SimCLR encoders."""

from __future__ import annotations

import torch


def make_accelerator(**kwargs):
    """An accelerate Accelerator that also forms a process group on machines without a GPU: accelerate
    only sets up gloo for `torchrun` on CPU when asked for `cpu=True`."""
    from accelerate import Accelerator

    has_device = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or torch.backends.mps.is_available()
    kwargs.setdefault("cpu", not has_device)
    return Accelerator(**kwargs)


def dataclass_cli(config_class, run, prog: str, doc: str, argv=None) -> int:
    """`python -m ...` entry point: one --flag per field of a config dataclass; clear errors exit with 2."""
    import argparse
    import sys

    from gen.errors import report

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, field in config_class.__dataclass_fields__.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=type(field.default), default=field.default)
    try:
        run(config_class(**vars(parser.parse_args(argv))))
    except SystemExit:
        raise
    except Exception as err:
        return report(err, debug)
    return 0
