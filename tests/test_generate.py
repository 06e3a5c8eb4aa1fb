"""`gen generate`: items from every source, per-sample seeds, the same bytes on 1 or 2 processes and at any
batch size, resumable after a kill with nothing missing, twice or rewritten, a data set `datasets` and
`gen train` read, the best samples kept by a reward, and every bad input named before any work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gen.cli import main
from gen.generate import Item, batches, file_name, read_items, sample_seed

GEN = [sys.executable, "-m", "gen"]
DIGITS = ["digits", "--steps", "4"]


def _images(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _metadata(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


# -- the pieces ------------------------------------------------------------------------------------------------------
def test_each_sample_has_its_own_seed():
    seeds = {sample_seed(0, i, j) for i in range(50) for j in range(8)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 3, 2) != sample_seed(0, 3, 2) and sample_seed(0, 3, 2) == sample_seed(0, 3, 2)


def test_batches_are_cut_from_items_alone():
    items = [Item(i, "none") for i in range(5)]
    cut = batches(items, num_per_item=3, batch_size=7)
    assert [[(item.index, j) for item, j in b] for b in cut] == [
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)],
        [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)],
        [(4, 0), (4, 1), (4, 2)],
    ]
    big = batches(items[:1], num_per_item=5, batch_size=2)
    assert [len(b) for b in big] == [2, 2, 1] and sum(len(b) for b in big) == 5
    assert file_name(items[3], 2) == "000003-2.png"


def test_prompt_files_of_every_kind(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n a red dog \n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat", "style": "ink"}\n{"prompt": "a dog", "style": "oil"}\n')
    (tmp_path / "p.csv").write_text("prompt,score\na cat,3\na dog,5\n")
    assert [i.value for i in read_items(prompts=tmp_path / "p.txt")] == ["a cat", "a red dog"]
    jsonl = read_items(prompts=tmp_path / "p.jsonl")
    assert jsonl[1].record() == {"style": "oil", "prompt": "a dog"}
    assert read_items(prompts=tmp_path / "p.csv")[0].record() == {"score": "3", "prompt": "a cat"}


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--prompts", "missing.txt"], "prompts: cannot read"),
        (["--prompts", "empty.txt"], "prompts: .* holds no prompts"),
        (["--prompts", "nocolumn.jsonl"], "row 1 .* has no 'prompt'"),
        (["--class-labels", "1", "--count", "3"], "exactly one of"),
        ([], "exactly one of"),
        (["--count", "2", "--num-per-item", "0"], "num_per_item: must be >= 1"),
        (["--count", "2", "--batch-size", "0"], "batch_size: must be >= 1"),
        (["--count", "2", "--guidance", "nohook.json"], 'needs a "hook"'),
        (["--count", "2", "--guidance", "unknown.json"], "hook 'Magic' is not one of"),
        (["--count", "2", "--guidance", "badarg.json"], "SVDD takes .* not \\['num_candiates'\\]"),
        (["--count", "2", "--guidance", "badreward.json"], "reward 'beauty' is not one of"),
        (["--count", "2", "--keep-top", "1"], "keep_top, min_reward: rank samples by a reward"),
        (["--count", "2", "--num-per-item", "2", "--keep-top", "3", "--guidance", "svdd.json"], "keep_top: must lie in"),
        (["--count", "2", "--steps", "0"], "steps: must be >= 1"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    Path("empty.txt").write_text("\n\n")
    Path("nocolumn.jsonl").write_text('{"text": "a cat"}\n')
    Path("nohook.json").write_text('{"reward": "brightness"}')
    Path("unknown.json").write_text('{"hook": "Magic"}')
    Path("badarg.json").write_text('{"hook": "SVDD", "num_candiates": 4, "reward": "brightness"}')
    Path("badreward.json").write_text('{"hook": "BestOfN", "reward": "beauty"}')
    Path("svdd.json").write_text('{"hook": "SVDD", "reward": "brightness"}')
    status = main(["generate", *DIGITS, "--out", "out", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    import re

    assert re.search(pattern, err[0]), err[0]
    assert not Path("out").exists(), "nothing is written before the input is known good"


def test_an_output_folder_of_another_run_or_owner_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["generate", *DIGITS, "--class-labels", "1", "--out", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "run"
    assert main(["generate", *DIGITS, "--class-labels", "1", "2", "--out", str(out)]) == 0
    assert main(["generate", *DIGITS, "--class-labels", "1", "2", "--num-per-item", "2", "--out", str(out)]) == 2
    assert "other settings (num_per_item: 1)" in capsys.readouterr().err


# -- the run ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_or_two_processes_and_any_batch_size_write_the_same_bytes(tmp_path):
    args = [*DIGITS, "--class-labels", "0", "3", "7", "--num-per-item", "3", "--seed", "5"]
    assert main(["generate", *args, "--batch-size", "4", "--out", str(tmp_path / "one")]) == 0
    assert main(["generate", *args, "--batch-size", "9", "--out", str(tmp_path / "big")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "-m", "gen", "generate"]
    subprocess.run([*torchrun, *args, "--batch-size", "4", "--out", str(tmp_path / "two")], check=True, env=env, capture_output=True)
    one, two, big = (_images(tmp_path / n) for n in ("one", "two", "big"))
    assert len(one) == 9 and one == two == big
    assert (tmp_path / "one" / "metadata.jsonl").read_bytes() == (tmp_path / "two" / "metadata.jsonl").read_bytes()
    assert len(list((tmp_path / "two" / ".gen-generate").glob("shard-*.jsonl"))) == 2, "both processes wrote"


@pytest.mark.slow
def test_a_killed_run_is_finished_by_the_same_command(tmp_path):
    args = [*GEN, "generate", "digits", "--steps", "20", "--class-labels", "0", "1", "2", "3", "4", "5", "--num-per-item", "4", "--batch-size", "2"]
    whole = tmp_path / "whole"
    subprocess.run([*args, "--out", str(whole)], check=True, capture_output=True)
    cut = tmp_path / "cut"
    process = subprocess.Popen([*args, "--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = cut / ".gen-generate" / "shard-0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not shard.exists() or len(shard.read_text().splitlines()) < 5):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cut.glob("*.png")}
    finished_before = {json.loads(line)["file_name"] for line in shard.read_text().splitlines() if line.endswith("}")}
    assert 0 < len(finished_before) < 24 and not (cut / "metadata.jsonl").exists()
    subprocess.run([*args, "--out", str(cut)], check=True, capture_output=True)
    assert _images(cut) == _images(whole)
    names = [row["file_name"] for row in _metadata(cut)]
    assert sorted(names) == sorted(_images(whole)) and len(names) == len(set(names)) == 24
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cut.glob("*.png")}
    assert all(after[name] == before[name] for name in finished_before), "a finished image was rewritten"


@pytest.mark.slow
def test_the_folder_is_a_data_set_and_the_best_samples_are_kept(tmp_path):
    import datasets

    guidance = tmp_path / "svdd.json"
    guidance.write_text(
        json.dumps({"hook": "SVDD", "num_candidates": 2, "reward": {"name": "classifier_log_prob", "classifier": "zoo:digits-classifier", "target": 3}})
    )
    out = tmp_path / "threes"
    argv = [
        "generate",
        "digits",
        "--steps",
        "10",
        "--class-labels",
        "3",
        "8",
        "--num-per-item",
        "4",
        "--guidance",
        str(guidance),
        "--keep-top",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = _metadata(out)
    assert [r["item"] for r in rows] == [0, 0, 1, 1] and all(r["hooks"] == ["SVDD"] and r["reward_calls"] > 0 for r in rows)
    dropped = [json.loads(line) for line in (out / ".gen-generate" / "dropped.jsonl").read_text().splitlines()]
    for item in (0, 1):
        kept = [r["reward"] for r in rows if r["item"] == item]
        lost = [r["reward"] for r in dropped if r["item"] == item]
        assert len(kept) == len(lost) == 2 and min(kept) >= max(lost)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file_name"] for r in rows)
    data = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert len(data) == 4 and data[0]["label"] == 3 and "reward" in data.column_names
    assert main(argv) == 0 and len(_metadata(out)) == 4, "the same command on a finished run changes nothing"
    train = tmp_path / "trained"
    assert (
        main(
            [
                "train",
                "--data",
                str(out),
                "--condition",
                "class",
                "--resolution",
                "16",
                "--max-train-steps",
                "2",
                "--train-batch-size",
                "2",
                "--output-dir",
                str(train),
            ]
        )
        == 0
    )


def test_prompts_with_kept_columns_on_a_saved_text_model(tmp_path):
    from gen import testing as tiny

    tiny.text_pipeline().save_pretrained(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red cat", "style": "ink"}\n{"prompt": "a blue dog", "style": "oil"}\n')
    out = tmp_path / "out"
    assert (
        main(["generate", str(tmp_path / "model"), "--prompts", str(prompts), "--num-per-item", "2", "--steps", "3", "--guidance", "2.0", "--out", str(out)])
        == 0
    )
    rows = _metadata(out)
    assert [(r["prompt"], r["style"], r["draw"]) for r in rows] == [
        ("a red cat", "ink", 0),
        ("a red cat", "ink", 1),
        ("a blue dog", "oil", 0),
        ("a blue dog", "oil", 1),
    ]
    assert all(r["guidance"] == 2.0 and r["nfe"] == 6 for r in rows) and len(_images(out)) == 4


@pytest.mark.slow
def test_references_on_an_embedding_model(tmp_path):
    import numpy as np
    from PIL import Image

    references = tmp_path / "refs"
    references.mkdir()
    for name, seed in (("a.png", 0), ("b.png", 1)):
        Image.fromarray((np.random.RandomState(seed).rand(32, 32, 3) * 255).astype("uint8")).save(references / name)
    out = tmp_path / "out"
    assert main(["generate", "ihc-patches", "--references", str(references), "--num-per-item", "2", "--steps", "4", "--out", str(out)]) == 0
    rows = _metadata(out)
    assert [r["reference"] for r in rows] == ["a.png", "a.png", "b.png", "b.png"] and len(_images(out)) == 4


def test_a_saved_stock_sdxl_folder_through_sample_and_generate(tmp_path):
    """Stock folders are steered on the way in: gen sample and gen generate take a saved SDXL pipeline."""
    from gen import testing as tiny

    tiny.sdxl_pipeline().save_pretrained(tmp_path / "sdxl")
    assert main(["sample", str(tmp_path / "sdxl"), "--prompt", "a cat", "--num", "2", "--steps", "3", "--out", str(tmp_path / "samples")]) == 0
    assert json.loads((tmp_path / "samples" / "samples.json").read_text())["nfe"] == 6  # 3 guided steps
    (tmp_path / "p.txt").write_text("a cat\na red dog\n")
    out = tmp_path / "out"
    assert main(["generate", str(tmp_path / "sdxl"), "--prompts", str(tmp_path / "p.txt"), "--num-per-item", "2", "--steps", "3", "--out", str(out)]) == 0
    assert [r["prompt"] for r in _metadata(out)] == ["a cat", "a cat", "a red dog", "a red dog"] and len(_images(out)) == 4
