"""Faults: training killed with SIGKILL (mid-run, and in the middle of a checkpoint write) resumes to the
same weights as an uninterrupted run; incomplete checkpoints are never taken as valid."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from gen.training.checkpoints import candidates, latest_valid

pytestmark = pytest.mark.slow

ARGS = [
    "--data",
    "digits",
    "--resolution",
    "8",
    "--block-out-channels",
    "8,16",
    "--attention-levels",
    "1",
    "--layers-per-block",
    "1",
    "--attention-head-dim",
    "4",
    "--train-batch-size",
    "8",
    "--max-train-steps",
    "12",
    "--checkpointing-steps",
    "4",
    "--checkpoints-total-limit",
    "100",
    "--lr-warmup-steps",
    "2",
    "--no-progress",
]

KILL_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    import gen.training.train as train
    original, calls = train.diffusion_loss, [0]
    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == {step}:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    train.diffusion_loss = dying
    sys.exit(train.main(sys.argv[1:]))
""")

KILL_IN_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import gen.training.checkpoints as checkpoints
    import gen.training.train as train
    original = checkpoints.write_manifest
    def dying(folder, step, epoch):
        if step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(folder, step, epoch)
    checkpoints.write_manifest = dying
    sys.exit(train.main(sys.argv[1:]))
""")


def run(script: str, out, *extra):
    return subprocess.run([sys.executable, "-c", script, *ARGS, "--output-dir", str(out), *extra], capture_output=True, text=True, timeout=300)


def weights(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    done = run("import sys, gen.training.train as t; sys.exit(t.main(sys.argv[1:]))", out)
    assert done.returncode == 0, done.stderr[-2000:]
    return weights(out)


def test_sigkill_mid_run_then_resume(tmp_path, uninterrupted):
    killed = run(KILL_AT_STEP.format(step=10), tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "model_index.json").exists()
    newest = latest_valid(tmp_path / "checkpoints")
    assert newest.name == "checkpoint-8"  # killed during step 10: at most one interval (4 steps) lost
    resumed = run("import sys, gen.training.train as t; sys.exit(t.main(sys.argv[1:]))", tmp_path, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    finished = weights(tmp_path)
    assert all(torch.equal(finished[k], uninterrupted[k]) for k in uninterrupted)
    losses = json.loads((tmp_path / "losses.json").read_text())["losses"]
    assert [row[0] for row in losses] == list(range(1, 13))


def test_sigkill_during_a_checkpoint_write_leaves_no_valid_half_checkpoint(tmp_path, uninterrupted):
    killed = run(KILL_IN_CHECKPOINT.format(step=8), tmp_path)
    assert killed.returncode == -signal.SIGKILL
    leftovers = list((tmp_path / "checkpoints").glob(".checkpoint-8.tmp"))
    assert leftovers and not (leftovers[0] / "manifest.json").exists()
    assert [p.name for p in candidates(tmp_path / "checkpoints")] == ["checkpoint-4"]
    assert latest_valid(tmp_path / "checkpoints").name == "checkpoint-4"
    resumed = run("import sys, gen.training.train as t; sys.exit(t.main(sys.argv[1:]))", tmp_path, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list((tmp_path / "checkpoints").glob(".checkpoint-*.tmp"))
    finished = weights(tmp_path)
    assert all(torch.equal(finished[k], uninterrupted[k]) for k in uninterrupted)


def test_a_corrupted_newest_checkpoint_is_skipped(tmp_path):
    done = run("import sys, gen.training.train as t; sys.exit(t.main(sys.argv[1:]))", tmp_path, "--max-train-steps", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    newest = tmp_path / "checkpoints" / "checkpoint-8" / "model.safetensors"
    newest.write_bytes(b"\0" * newest.stat().st_size)
    warnings = []
    assert latest_valid(tmp_path / "checkpoints", warn=warnings.append).name == "checkpoint-4"
    assert "does not match its manifest" in warnings[0]
