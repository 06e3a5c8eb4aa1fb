"""What every benchmark shares: interleaved timing, 95% intervals, machine facts, atomic JSON + PNG output.

Results go to out/bench/ (git-ignored) unless --out names another folder: the tracked figures in
benchmarks/results/ change only when asked (`--out benchmarks/results`).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from gen.analysis.metrics import interval  # noqa: F401  (one implementation, shared with the demo)
from gen.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"
DEFAULT_OUT = Path("out/bench")


def add_output_argument(parser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the JSON and PNG (default {DEFAULT_OUT}; pass {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS} to refresh the tracked results)",
    )


def machine(device: torch.device | str | None = None) -> dict:
    import diffusers

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        facts.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    else:
        facts["device"] = "cpu"
    return facts


def interleaved(runs: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each callable, run in turn (a, b, a, b, ...) so drift hits all alike."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(values: list[float]) -> dict:
    """Mean over seeds with its 95% interval, and the values themselves."""
    low, high = interval(values)
    return {"mean": sum(values) / len(values), "ci95": [low, high], "per_seed": list(values)}


def paired_claim(first: list[float], second: list[float], claim: str) -> dict:
    """Whether `first` beats `second` over the same seeds: the paired differences' summary and a verdict."""
    differences = [a - b for a, b in zip(first, second)]
    low, high = interval(differences)
    verdict = "holds here" if low > 0 else ("does not hold here" if high < 0 else "not shown here: the interval includes zero")
    return {"difference": summary(differences), "claim": claim, "verdict": verdict}


def median(values) -> float:
    return statistics.median(values)


def save(name: str, data: dict, figure=None, out: Path | str = DEFAULT_OUT, device=None) -> Path:
    """Write <out>/<name>.json (and .png when a matplotlib figure is given); returns the JSON path."""
    out = Path(out)
    data = {"benchmark": name, "machine": machine(device), **data}
    path = write_json(out / f"{name}.json", data)
    if figure is not None:
        atomic_write(out / f"{name}.png", lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    print(f"wrote {path}")
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
