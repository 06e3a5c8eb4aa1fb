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


def command_lines():
    lines = []
    for i, (kind, code) in enumerate(BLOCKS):
        if kind != "bash":
            continue
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith(SKIP) and line.startswith(("gen ", "python")):
                lines.append(pytest.param(line, id=f"bash-{i}-{line[:40]}"))
    return lines


def test_the_readme_has_runnable_blocks():
    assert len(python_blocks()) >= 5 and len(command_lines()) >= 5


@pytest.mark.parametrize("code", python_blocks())
def test_readme_python_block_runs(code, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("line", command_lines())
def test_readme_command_runs(line, tmp_path):
    done = subprocess.run(["bash", "-c", f"cd {shlex.quote(str(tmp_path))} && {line}"], env=dict(ENV, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
                          capture_output=True, text=True, timeout=900)
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
