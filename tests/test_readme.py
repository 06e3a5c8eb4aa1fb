"""The README cannot rot: every ```python block runs as written, and every command line of its ```bash blocks
that starts with `gen ` or `python` runs, in a scratch folder, with tiny settings through the environment
(STEPS=2 for trainers; commands that set up the machine, make, pip, git and multi-process launchers are
exercised elsewhere). Every script in examples/ runs end to end too."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(python|bash)\n(.*?)```", README, flags=re.S)
ENV = dict(os.environ, STEPS="2", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
SKIP = ("make", "pip", "git", "source", "cd", "torchrun", "accelerate", "python -m venv", "python3 -m venv", "bash ", "export", "#")


def python_blocks():
    return [pytest.param(code, id=f"python-{i}") for i, (kind, code) in enumerate(BLOCKS) if kind == "python"]


def command_blocks():
    """The runnable lines of each bash block, in order (a block's commands build on each other)."""
    blocks = []
    for i, (kind, code) in enumerate(BLOCKS):
        if kind != "bash":
            continue
        lines = [line.split("  #")[0].strip() for line in code.replace("\\\n", " ").splitlines()]
        lines = [line for line in lines if line and not line.startswith(SKIP) and line.startswith(("gen ", "python"))]
        if lines:
            blocks.append(pytest.param(lines, id=f"bash-{i}"))
    return blocks


def scratch(tmp_path):
    """A scratch folder where examples/ and benchmarks/ resolve as from the repository root."""
    for name in ("examples", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_the_readme_has_runnable_blocks():
    assert len(python_blocks()) >= 5 and sum(len(b.values[0]) for b in command_blocks()) >= 8


@pytest.mark.parametrize("code", python_blocks())
def test_readme_python_block_runs(code, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=scratch(tmp_path), env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("lines", command_blocks())
def test_readme_commands_run(lines, tmp_path):
    folder = scratch(tmp_path)
    env = dict(ENV, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for line in lines:
        done = subprocess.run(["bash", "-c", f"cd {shlex.quote(str(folder))} && {line}"], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix in (".py", ".sh")))
def test_example_runs_end_to_end(script, tmp_path):
    path = ROOT / "examples" / script
    command = ["bash", str(path), str(tmp_path / "run")] if script.endswith(".sh") else [sys.executable, str(path), "--out", str(tmp_path), *TINY.get(script, [])]
    done = subprocess.run(command, cwd=tmp_path, env=dict(ENV, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


TINY = {
    "value_guidance.py": ["--samples", "4", "--steps", "4"],
    "large_image.py": ["--size", "64", "--steps", "2"],
    "hybrid_distillation.py": ["--samples", "4", "--base-schedule", "4"],
}
