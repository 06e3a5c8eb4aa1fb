"""A new user's first hour, timed: every README block in order, in one folder (each builds on the ones before,
as for a person reading down the page), with tiny settings through the environment (STEPS=2, SAMPLES=128). Any traceback
or warning line a block prints fails the test: a plain README run shows nothing the user cannot act on.

The interpreter is the project's `.venv`, which `make test` built from nothing on CI's fresh clone (CI runs
on a clean clone of main), so this is a fresh install's first hour. The seconds each block took are written
to out/first_hour.json beside the repository for the README's timings at STEPS=2."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent
BLOCKS = re.findall(r"```(python|bash)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
SKIP = ("make", "pip", "git", "source", "cd", "torchrun", "python -m venv", "python3 -m venv", "bash ", "export", "#")
NOISE = re.compile(r"Traceback|warn(ing)?\b|deprecat", re.I)


def runnable(code: str) -> list[str]:
    lines = [line.split("  #")[0].strip() for line in code.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith(SKIP) and line.startswith(("gen ", "python", "accelerate "))]


def steps():
    """(label, argv) for every README block in order: python blocks as `python -c`, bash lines as they are."""
    found = []
    for i, (kind, code) in enumerate(BLOCKS):
        if kind == "python":
            found.append((f"python-{i}", [sys.executable, "-c", code]))
        else:
            found += [(f"bash-{i}: {line[:60]}", ["bash", "-c", line]) for line in runnable(code)]
    return found


def test_the_readme_has_runnable_blocks():
    found = steps()
    assert sum(label.startswith("python") for label, _ in found) >= 5 and sum(label.startswith("bash") for label, _ in found) >= 8


def test_the_readme_walked_in_order_prints_no_traceback_and_no_warning(tmp_path):
    for name in ("examples", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(
        os.environ,
        STEPS="2",
        SAMPLES="128",
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    env.pop("PYTHONWARNINGS", None)
    timings, noisy = [], []
    for label, argv in steps():
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
        timings.append({"block": label, "seconds": round(time.perf_counter() - started, 1)})
        assert done.returncode == 0, f"{label}\n{done.stderr[-3000:]}"
        lines = [line for line in (done.stdout + done.stderr).splitlines() if NOISE.search(line)]
        noisy += [f"{label}: {line}" for line in lines]
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "first_hour.json").write_text(json.dumps(timings, indent=2) + "\n")
    assert not noisy, "\n".join(noisy[:20])
    assert len(timings) >= 12
