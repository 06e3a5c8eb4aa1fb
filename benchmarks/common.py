"""What every benchmark shares: interleaved timing, machine facts, atomic JSON + PNG output."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from gen.io import atomic_write, write_json

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


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


def median(values) -> float:
    return statistics.median(values)


def save(name: str, data: dict, figure=None) -> Path:
    """Write results/<name>.json (and .png when a matplotlib figure is given); returns the JSON path."""
    data = {"benchmark": name, "machine": machine(), **data}
    path = write_json(RESULTS / f"{name}.json", data)
    if figure is not None:
        atomic_write(RESULTS / f"{name}.png", lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
