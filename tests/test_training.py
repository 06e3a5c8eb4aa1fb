"""The trainer: CEP semantics, corruption, exact resume, 2 processes, LoRA through peft, refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gen.conditioning import ConditionEmbeddingPerturbation, class_embedding_tables
from gen.training.checkpoints import CheckpointError
from gen.training.data import CorruptedConditions, digits
from gen.training.train import TrainConfig, train

TINY = dict(
    data="digits",
    resolution=8,
    block_out_channels="8,16",
    attention_levels="1",
    layers_per_block=1,
    train_batch_size=16,
    lr_warmup_steps=2,
    progress=False,
    checkpointing_steps=0,
    attention_head_dim=4,
)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cep_off_and_cep_at_gamma_zero_train_bit_identically(tmp_path):
    plain = train(TrainConfig(output_dir=str(tmp_path / "plain"), max_train_steps=4, **TINY))
    zero = train(TrainConfig(output_dir=str(tmp_path / "zero"), max_train_steps=4, cep="gaussian", cep_gamma=0.0, **TINY))
    on = train(TrainConfig(output_dir=str(tmp_path / "on"), max_train_steps=4, cep="gaussian", cep_gamma=1.0, **TINY))
    assert same(weights(plain), weights(zero))
    assert not same(weights(plain), weights(on))


def test_cep_perturbs_class_embeddings_in_training_only():
    from gen import testing as tiny

    model = tiny.tiny_unet(num_class_embeds=11)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 5, 5])
    cep = ConditionEmbeddingPerturbation("uniform", 1.0)

    def run(labels, perturb: bool):
        if not perturb:
            return model(x, t, class_labels=labels).sample
        with cep.on_class_embeddings(model, torch.Generator().manual_seed(0)):
            return model(x, t, class_labels=labels).sample

    labels, null = torch.tensor([1, 2, 3]), torch.tensor([10, 10, 10])
    model.train()
    assert not torch.allclose(run(labels, True), run(labels, False))
    assert torch.equal(run(null, True), run(null, False))  # dropped (null) rows are never perturbed
    model.eval()
    with torch.no_grad():
        assert torch.equal(run(labels, True), run(labels, False))  # sampling: untouched
    assert not class_embedding_tables(model)[0][0]._forward_hooks


def test_cep_changes_the_training_loss_but_the_saved_pipeline_samples_without_it(tmp_path):
    out = train(TrainConfig(output_dir=str(tmp_path / "cep"), max_train_steps=2, cep="gaussian", cep_gamma=2.0, **TINY))
    from gen.pipelines.loading import load_pipeline

    pipe = load_pipeline(out)
    assert not any(m._forward_hooks for m in pipe.unet.modules())
    kwargs = dict(class_labels=[1, 2], num_inference_steps=3, output_type="pt")
    a = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    b = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(a, b)


def test_tensor_cep_scale_is_gamma_over_sqrt_d():
    cep = ConditionEmbeddingPerturbation("gaussian", 2.0)
    e = torch.zeros(4000, 64)
    noise = cep.perturb(e, generator=torch.Generator().manual_seed(0))
    assert abs(noise.std().item() - 2.0 / 8.0) < 0.01
    uniform = ConditionEmbeddingPerturbation("uniform", 2.0).perturb(e, generator=torch.Generator().manual_seed(0))
    assert uniform.abs().max() <= 0.25 + 1e-6 and uniform.abs().max() > 0.24


def test_label_corruption_flips_the_requested_fraction_deterministically():
    data = digits(8, "train")
    a = CorruptedConditions(data, 0.1, 10, seed=3)
    b = CorruptedConditions(data, 0.1, 10, seed=3)
    flipped = (a.flipped_labels != data.labels).float().mean().item()
    assert 0.08 < flipped < 0.12
    assert torch.equal(a.flipped_labels, b.flipped_labels)
    assert a[0]["pixel_values"].shape == data[0]["pixel_values"].shape


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path):
    options = dict(TINY, checkpointing_steps=3)
    whole = train(TrainConfig(output_dir=str(tmp_path / "whole"), max_train_steps=6, **options))
    train(TrainConfig(output_dir=str(tmp_path / "split"), max_train_steps=3, **options))
    assert (tmp_path / "split" / "checkpoints" / "checkpoint-3" / "manifest.json").exists()
    split = train(TrainConfig(output_dir=str(tmp_path / "split"), max_train_steps=6, resume="latest", **options))
    assert same(weights(whole), weights(split))
    losses = json.loads((split / "losses.json").read_text())["losses"]
    assert [row[0] for row in losses] == list(range(1, 7))


@pytest.mark.slow
def test_two_process_run_completes_and_its_loss_falls(tmp_path):
    out = tmp_path / "ddp"
    args = [
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
        "16",
        "--max-train-steps",
        "40",
        "--learning-rate",
        "1e-3",
        "--checkpointing-steps",
        "20",
        "--no-progress",
        "--output-dir",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gen.training.train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[:6000]
    losses = [row[1] for row in json.loads((out / "losses.json").read_text())["losses"]]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    checkpoint = out / "checkpoints" / "checkpoint-40"
    assert (out / "model_index.json").exists() and (checkpoint / "manifest.json").exists()
    # one RNG state per process: the run really was two processes in one process group
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}


def test_lora_training_writes_peft_loadable_weights(tmp_path):
    from gen.pipelines.loading import load_pipeline
    from gen.training.lora import load_lora

    base = train(TrainConfig(output_dir=str(tmp_path / "base"), max_train_steps=2, **TINY))
    tuned = train(TrainConfig(output_dir=str(tmp_path / "lora"), max_train_steps=3, init_from=str(base), lora_rank=2, learning_rate=1e-2, **TINY))
    folder = tuned / "lora"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    state = load_file(str(folder / "adapter_model.safetensors"))
    assert state and all("lora_" in k for k in state)
    plain = load_pipeline(base).unet
    adapted = load_lora(load_pipeline(base).unet, folder)
    x, t, labels = torch.randn(2, 1, 8, 8), torch.tensor([10, 10]), torch.tensor([1, 2])
    with torch.no_grad():
        assert not torch.allclose(plain(x, t, class_labels=labels).sample, adapted(x, t, class_labels=labels).sample)
    from peft import LoraConfig

    assert LoraConfig.from_pretrained(str(folder)).r == 2


@pytest.mark.parametrize(
    "options, error, pattern",
    [
        (dict(condition="colour"), ValueError, r"condition: unknown condition type 'colour'"),
        (dict(cep="gaussian", cep_gamma=-0.5), ValueError, r"cep_gamma: must be (a finite number )?>= 0"),
        (dict(cep_gamma=-1.0), ValueError, r"cep_gamma: must be a finite number >= 0"),
        (dict(cep="laplace"), ValueError, r"cep: unknown kind 'laplace'"),
        (dict(data="/definitely/not/here"), FileNotFoundError, r"data: /definitely/not/here is not a folder"),
        (dict(corrupt_rate=1.5), ValueError, r"corrupt_rate: must lie in \[0, 1\)"),
        (dict(lora_rank=4), ValueError, r"lora_rank: LoRA adapts a trained model"),
        (dict(mixed_precision="fp8"), ValueError, r"mixed_precision"),
        (dict(rescale_betas_zero_snr=True), ValueError, r"rescale_betas_zero_snr: .*--prediction-type v_prediction"),
        (dict(timestep_spacing="middle"), ValueError, r"timestep_spacing: one of"),
    ],
)
def test_bad_training_input_is_refused_before_anything_is_written(tmp_path, options, error, pattern):
    out = tmp_path / "run"
    with pytest.raises(error, match=pattern):
        train(TrainConfig(output_dir=str(out), max_train_steps=1, **{**TINY, **options}))
    assert not out.exists()


def test_zero_terminal_snr_schedule_is_trained_and_saved_with_the_model(tmp_path):
    """--rescale-betas-zero-snr: the loss sees pure noise at the last step, and the saved sampler has the same
    schedule and spacing (so sampling starts where training ended); a fine-tune keeps them; an epsilon model
    cannot be moved to zero SNR."""
    from gen.pipelines.loading import load_pipeline
    from gen.training.options import parse_config

    linear = dict(TINY, beta_schedule="linear")  # the cosine default is already close to zero SNR at its last step
    zero = train(
        TrainConfig(
            output_dir=str(tmp_path / "zero"),
            max_train_steps=2,
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            **linear,
        )
    )
    scheduler = load_pipeline(zero).scheduler
    assert scheduler.config.rescale_betas_zero_snr and scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.alphas_cumprod[-1] < 1e-6
    scheduler.set_timesteps(4)
    assert scheduler.timesteps[0] == scheduler.config.num_train_timesteps - 1

    tuned = train(TrainConfig(output_dir=str(tmp_path / "tuned"), max_train_steps=1, init_from=str(zero), **linear))
    assert load_pipeline(tuned).scheduler.config.rescale_betas_zero_snr

    plain = train(TrainConfig(output_dir=str(tmp_path / "plain"), max_train_steps=1, **linear))
    assert load_pipeline(plain).scheduler.alphas_cumprod[-1] > 1e-5  # signal left at the last step
    with pytest.raises(ValueError, match=r"rescale_betas_zero_snr: the --init-from model predicts epsilon"):
        train(TrainConfig(output_dir=str(tmp_path / "refused"), max_train_steps=1, init_from=str(plain), rescale_betas_zero_snr=True, **linear))
    assert not (tmp_path / "refused").exists()
    moved = train(
        TrainConfig(
            output_dir=str(tmp_path / "moved"),
            max_train_steps=1,
            init_from=str(plain),
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            **linear,
        )
    )
    saved = load_pipeline(moved).scheduler.config  # a fine-tune moved to zero SNR saves the sampler it was trained for
    assert saved.prediction_type == "v_prediction" and saved.rescale_betas_zero_snr and saved.timestep_spacing == "trailing"

    flags = ["--data", "digits", "--output-dir", "x"]
    assert parse_config(TrainConfig, flags, "t", "").rescale_betas_zero_snr is None  # absent: the --init-from model's
    assert parse_config(TrainConfig, [*flags, "--rescale-betas-zero-snr"], "t", "").rescale_betas_zero_snr is True
    assert parse_config(TrainConfig, [*flags, "--no-rescale_betas_zero_snr"], "t", "").rescale_betas_zero_snr is False


def test_empty_data_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"data: .* holds no images"):
        train(TrainConfig(output_dir=str(tmp_path / "run"), max_train_steps=1, **{**TINY, "data": str(tmp_path / "empty")}))
    assert not (tmp_path / "run").exists()


def test_corrupt_or_pickled_checkpoints_are_refused_and_nothing_is_overwritten(tmp_path):
    run = train(TrainConfig(output_dir=str(tmp_path / "run"), max_train_steps=2, **{**TINY, "checkpointing_steps": 2}))
    checkpoint = run / "checkpoints" / "checkpoint-2"
    weights_file = checkpoint / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-10])  # truncated: the manifest no longer matches
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"resume: .*model.safetensors does not match its manifest"):
        train(TrainConfig(output_dir=str(run), max_train_steps=4, resume=str(checkpoint), **TINY))
    pickled = tmp_path / "old.ckpt"
    torch.save({"w": torch.zeros(1)}, pickled)
    with pytest.raises(CheckpointError, match=r"resume: .*old.ckpt is a pickle file"):
        train(TrainConfig(output_dir=str(run), max_train_steps=4, resume=str(pickled), **TINY))
    (checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin holds pickled weights"):
        train(TrainConfig(output_dir=str(run), max_train_steps=4, resume=str(checkpoint), **TINY))
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "pytorch_model.bin"}
    assert after == before


def test_text_conditioned_training_from_an_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for i in range(12):
        Image.new("RGB", (16, 16), (20 * i, 255 - 20 * i, 128)).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": "a bright square" if i % 2 else "a dark square"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows))
    out = train(TrainConfig(output_dir=str(tmp_path / "run"), max_train_steps=2, **{**TINY, "data": str(folder), "condition": "text", "train_batch_size": 4}))
    from gen.pipelines.loading import load_pipeline

    pipe = load_pipeline(out)
    images = pipe(["a bright square", "a dark square"], num_inference_steps=2, output_type="pt").images
    assert type(pipe).__name__ == "TextToImagePipeline" and images.shape == (2, 3, 8, 8)
