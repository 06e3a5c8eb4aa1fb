"""Nothing a user owns is deleted or overwritten unasked; training that diverges stops and keeps what was finite;
no command prints a traceback for a user's mistake; no trainer spins on an empty data loader."""

import json

import pytest
import torch
from safetensors.torch import load_file

from gen import cli
from gen.errors import TrainingDiverged
from gen.training.train import TrainConfig, main as train_main, train

TINY = dict(
    data="digits",
    condition="class",
    resolution=8,
    block_out_channels="8,16",
    layers_per_block=1,
    attention_levels="1",
    attention_head_dim=4,
    train_batch_size=8,
    lr_warmup_steps=0,
    progress=False,
)


def owned(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("mine")
    return folder


def test_the_value_trainer_never_replaces_a_folder_holding_other_files(tmp_path):
    from gen.training.value import ValueConfig, train_value

    folder = owned(tmp_path / "mine")
    with pytest.raises(ValueError, match=r"output_dir: .* already holds files a gen value run did not write"):
        train_value(ValueConfig(output_dir=str(folder), num_samples=2, steps=2, max_train_steps=1, train_batch_size=2))
    assert (folder / "notes.txt").read_text() == "mine" and len(list(folder.iterdir())) == 1


@pytest.mark.parametrize("limit", [-1, 0])
def test_a_retention_limit_below_one_is_refused_before_anything_is_written(tmp_path, limit):
    with pytest.raises(ValueError, match=r"checkpoints_total_limit: must be an integer >= 1"):
        train(TrainConfig(output_dir=str(tmp_path / "run"), max_train_steps=2, checkpoints_total_limit=limit, **TINY))
    assert not (tmp_path / "run").exists()


def test_a_second_run_into_a_run_folder_needs_resume_or_overwrite(tmp_path):
    out = train(TrainConfig(output_dir=str(tmp_path / "run"), max_train_steps=2, checkpointing_steps=1, **TINY))
    weights = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"holds an earlier train run; pass --resume latest to continue it or --overwrite"):
        train(TrainConfig(output_dir=str(out), max_train_steps=2, seed=1, **TINY))
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    train(TrainConfig(output_dir=str(out), max_train_steps=2, seed=1, overwrite=True, checkpointing_steps=1, **TINY))
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != weights
    owned(tmp_path / "other")
    with pytest.raises(ValueError, match=r"already holds files a gen train run did not write"):
        train(TrainConfig(output_dir=str(tmp_path / "other"), max_train_steps=2, **TINY))


def test_training_that_diverges_stops_and_keeps_only_finite_weights(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"learning_rate: .*(diverged|non-finite)"):
        train(TrainConfig(output_dir=str(tmp_path / "run"), max_train_steps=30, checkpointing_steps=1, learning_rate=1e12, max_grad_norm=0.0, **TINY))
    run = tmp_path / "run"
    assert not (run / "model_index.json").exists()  # no final pipeline was saved
    for checkpoint in (run / "checkpoints").glob("checkpoint-*"):
        for file in checkpoint.rglob("*.safetensors"):
            assert all(torch.isfinite(v.float()).all() for v in load_file(str(file)).values())


def test_trainers_never_spin_on_an_empty_loader(tmp_path):
    from gen.training.value import ValueConfig, train_value

    with pytest.raises(ValueError, match=r"train_batch_size"):
        train_value(ValueConfig(output_dir=str(tmp_path / "value"), num_samples=1, steps=1, train_batch_size=64, max_train_steps=1))


@pytest.mark.parametrize(
    "argv, status, text",
    [
        (["train", "--data", "/no/such/folder", "--output-dir", "out"], 2, "data:"),
        (["train", "--data", "digits", "--output-dir", "out", "--resolution", "7", "--block-out-channels", "8,16"], 2, "resolution:"),
        (["train", "--data", "digits", "--output-dir", "out", "--beta-schedule", "cubic"], 2, "beta_schedule:"),
        (["train", "--data", "digits", "--output-dir", "out", "--learning-rate", "inf"], 2, "learning_rate:"),
        (["train", "--data", "digits", "--output-dir", "out", "--max-grad-norm", "-1"], 2, "max_grad_norm:"),
        (["train", "--data", "digits", "--output_dir", "out", "--report-to", "nonsense"], 2, "report_to:"),
        (["sample", "/no/such/model"], 2, "model:"),
        (["sample", "digits", "--prompt", "a cat"], 2, "prompt:"),
        (["bench", "nope"], 2, "bench:"),
    ],
)
def test_a_mistake_on_the_command_line_is_one_line_and_status_2(argv, status, text, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == status
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and text in err, err
    assert not (tmp_path / "out").exists()


def test_a_fault_that_is_not_the_users_is_status_1_and_debug_shows_the_traceback(capsys, monkeypatch):
    import gen.training.train as module

    def broken(config):
        raise KeyError("internal")

    monkeypatch.setattr(module, "train", broken)
    assert train_main(["--data", "digits", "--output-dir", "x"]) == 1
    assert "internal error (KeyError)" in capsys.readouterr().err
    assert train_main(["--data", "digits", "--output-dir", "x", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_corrupt_image_in_a_data_folder_is_named_before_training(tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "b").mkdir()
    for i, folder in enumerate(("a", "b")):
        Image.fromarray((np.random.RandomState(i).rand(8, 8, 3) * 255).astype("uint8")).save(data / folder / f"{i}.png")
    (data / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"data: .*broken.png is not a readable image"):
        train(TrainConfig(**{**TINY, "data": str(data)}, output_dir=str(tmp_path / "run"), max_train_steps=1))
    assert not (tmp_path / "run").exists()


def test_label_range_in_metadata_is_checked(tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray((np.random.RandomState(0).rand(8, 8, 3) * 255).astype("uint8")).save(data / "0.png")
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "label": -1}) + "\n")
    with pytest.raises(ValueError, match=r"data: the label of 0.png is -1"):
        train(TrainConfig(**{**TINY, "data": str(data)}, output_dir=str(tmp_path / "run"), max_train_steps=1))
