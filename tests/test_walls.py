"""The first hour's walls, each gone: a checkpoint folder names the command that turns it into a pipeline
(and that command works), every trainer ends with one line saying where, how long and the final loss, the
value trainer says what it samples, --help shows defaults, and accelerate's launcher shows gen's one line
without a traceback of its own."""

import re
import shlex
import subprocess
import sys

import pytest

from gen import cli
from gen.training.train import main as train_main

TINY = [
    "--data",
    "digits",
    "--resolution",
    "8",
    "--block-out-channels",
    "8,16",
    "--layers-per-block",
    "1",
    "--attention-levels",
    "1",
    "--attention-head-dim",
    "4",
    "--train-batch-size",
    "8",
    "--lr-warmup-steps",
    "0",
    "--no-progress",
]


def test_a_checkpoint_names_the_command_that_exports_it_and_that_command_works(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main([*TINY, "--output-dir", str(run), "--max-train-steps", "2", "--checkpointing-steps", "1"]) == 0
    checkpoint = run / "checkpoints" / "checkpoint-1"
    capsys.readouterr()
    assert cli.main(["sample", str(checkpoint), "--class-labels", "1", "--steps", "2", "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr().err
    command = re.search(r"with: (gen train .*?) \(or finish", said).group(1)
    assert f"--resume {checkpoint}" in command and "--max-train-steps 1" in command, said
    (run / "model_index.json").unlink()  # as if the run had been killed before its end
    assert train_main(shlex.split(command)[2:] + ["--no-progress"]) == 0
    assert cli.main(["sample", str(run), "--class-labels", "1", "--steps", "2", "--out", str(tmp_path / "out")]) == 0


@pytest.mark.parametrize("trainer", ["train", "value", "distill"])
def test_every_trainer_ends_with_one_line_saying_where_how_long_and_the_final_loss(tmp_path, capsys, trainer):
    if trainer == "train":
        status = train_main([*TINY, "--output-dir", str(tmp_path / "run"), "--max-train-steps", "2", "--checkpointing-steps", "0"])
        kind = "gen train"
    elif trainer == "value":
        from gen.training.value import main

        status = main(
            [
                "--output-dir",
                str(tmp_path / "run"),
                "--num-samples",
                "4",
                "--steps",
                "2",
                "--sample-batch-size",
                "4",
                "--train-batch-size",
                "4",
                "--max-train-steps",
                "2",
                "--width",
                "4",
            ]
        )
        kind = "value network"
    else:
        from gen.training.distill import main

        status = main(
            ["--output-dir", str(tmp_path / "run"), "--original-inference-steps", "4", "--train-batch-size", "8", "--max-train-steps", "2", "--no-progress"]
        )
        kind = "distillation"
    out = capsys.readouterr().out
    assert status == 0
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(rf"{kind}: 2 steps in \d+ s, final loss [-\d.e+]+; saved to {re.escape(str(tmp_path / 'run'))}", last), last
    if trainer == "value":
        assert "sampling trajectories: batch 1 of 1" in out


def test_help_shows_the_defaults(capsys):
    assert train_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "optimisation steps (default: 1000)" in text and "(default: 16)" in text
    assert cli.main(["sample", "--help"]) == 0
    assert "pixel upscaling of the grid (default: 4)" in capsys.readouterr().out


@pytest.mark.slow
def test_accelerate_launch_shows_gens_one_line_and_no_traceback(tmp_path):
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "-q",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "gen.training.train",
    ]
    done = subprocess.run([*accelerate, *TINY, "--output_dir", str(tmp_path / "run"), "--report_to", "nonsense"], capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error: report_to: "), done.stderr[-2000:]
    done = subprocess.run([*accelerate, *TINY, "--output_dir", str(tmp_path / "run"), "--max_train_steps", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not re.search(r"warn", done.stderr, re.I), done.stderr[-2000:]
