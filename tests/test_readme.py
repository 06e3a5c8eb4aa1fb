"""Every script in examples/ runs end to end. (The README's own blocks run in order, in one folder, in
tests/test_first_hour.py, which also fails on any warning.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent
ENV = dict(os.environ, STEPS="2", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix in (".py", ".sh")))
def test_example_runs_end_to_end(script, tmp_path):
    path = ROOT / "examples" / script
    command = (
        ["bash", str(path), str(tmp_path / "run")] if script.endswith(".sh") else [sys.executable, str(path), "--out", str(tmp_path), *TINY.get(script, [])]
    )
    done = subprocess.run(
        command, cwd=tmp_path, env=dict(ENV, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"), capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]


TINY = {
    "value_guidance.py": ["--samples", "4", "--steps", "4", "--seeds", "0", "1"],
    "large_image.py": ["--size", "64", "--steps", "2"],
    "hybrid_distillation.py": ["--per-class", "2", "--base-schedule", "4", "--seeds", "0", "1"],
}
