"""The loop every trainer shares (gen.training.loop): accumulation, mixed precision, checkpoints and exact
resume, for the value, distillation, PPAP and masked-diffusion trainers as for the diffusion trainer; their command lines."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gen.training import checkpoints
from gen.training.discrete import DiscreteConfig, train_discrete
from gen.training.distill import DistillConfig, distill
from gen.training.loop import data_loader, make_run_accelerator, optimise
from gen.training.options import LoopOptions, parse_config
from gen.training.ppap import PPAPConfig, train_ppap
from gen.training.value import ValueConfig, train_value

VALUE = dict(num_samples=8, steps=2, train_batch_size=8, sample_batch_size=8, max_train_steps=4, progress=False)
DISTILL = dict(train_batch_size=8, max_train_steps=4, progress=False)
PPAP = dict(num_experts=2, lora_rank=2, num_samples=16, sample_steps=2, train_batch_size=8, max_train_steps=4, progress=False)
DISCRETE = dict(width=16, layers=1, heads=2, train_batch_size=16, max_train_steps=4, progress=False)
FAMILY = dict(resolution=16, train_batch_size=4, max_train_steps=4, lr_warmup_steps=0, learning_rate=1e-3, progress=False)


def family_trainer(build, **options):
    """gen.training.train fine-tuning a tiny family folder (built beside the run) on 8 captioned images: 2 batches an
    epoch, so 4 steps cross an epoch (new random crops and flips)."""

    def run(**kw):
        from pathlib import Path

        from gen import testing as tiny
        from gen.training.train import TrainConfig, train

        root = Path(kw["output_dir"]).parent
        if not (root / "init").exists():
            build().save_pretrained(root / "init")
            tiny.caption_folder(root / "captions")
        return train(TrainConfig(data=str(root / "captions"), init_from=str(root / "init"), **{**FAMILY, **options, **kw}))

    return run


def _sdxl():
    from gen import testing as tiny

    return tiny.sdxl_pipeline()


def _flux():
    from gen import testing as tiny

    return tiny.flux_pipeline(guidance_embeds=True)


TRAINERS = {
    "sdxl-lora": (
        family_trainer(_sdxl, lora_rank=2, train_text_encoder=True, center_crop=False, random_flip=True, cep="gaussian"),
        "lora/pytorch_lora_weights.safetensors",
    ),
    "flux": (family_trainer(_flux, weighting_scheme="logit_normal", encoder_dropout="text_encoder_2=0.3"), "transformer/diffusion_pytorch_model.safetensors"),
    "value": (lambda **kw: train_value(ValueConfig(**{**VALUE, **kw})), "diffusion_pytorch_model.safetensors"),
    "distill": (lambda **kw: distill(DistillConfig(**{**DISTILL, **kw})), "unet/diffusion_pytorch_model.safetensors"),
    "ppap": (lambda **kw: train_ppap(PPAPConfig(**{**PPAP, **kw})), "expert-0/adapter_model.safetensors"),
    "discrete": (lambda **kw: train_discrete(DiscreteConfig(**{**DISCRETE, **kw})), "model/diffusion_pytorch_model.safetensors"),
}


def fit_line(tmp_path, accumulation: int, steps: int = 3, lr: float = 0.01) -> float:
    """Fit y = 3x by SGD through `optimise` on 4 points in micro-batches of 2; returns the weight."""
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    options = LoopOptions(max_train_steps=steps, gradient_accumulation_steps=accumulation, max_grad_norm=0.0, checkpointing_steps=0, progress=False)
    accelerator = make_run_accelerator(options, tmp_path)
    loader, order = data_loader(torch.utils.data.TensorDataset(x, 3 * x), 2)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    calls = []

    def loss(batch, where):
        calls.append(where.step)
        return F.mse_loss(model(batch[0]), batch[1])

    rows = optimise(accelerator, options, tmp_path, model, optimizer, scheduler, loader, order, loss)
    assert [r[0] for r in rows] == list(range(1, steps + 1)) and calls == [s for s in range(steps) for _ in range(accumulation)]
    return accelerator.unwrap_model(model).weight.item()


def test_two_accumulated_micro_batches_make_one_full_batch_step(tmp_path):
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = 0.0
    for _ in range(3):  # full-batch gradient descent on mean((w x - 3x)^2)
        w -= 0.01 * (2 * x * (w * x - 3 * x)).mean().item()
    assert fit_line(tmp_path / "a", accumulation=2) == pytest.approx(w, rel=1e-5)
    assert fit_line(tmp_path / "b", accumulation=1) != pytest.approx(w, rel=1e-3)  # half batches per step: another path


@pytest.mark.parametrize("name", list(TRAINERS))
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, name):
    run, weights = TRAINERS[name]
    whole = run(output_dir=str(tmp_path / "whole"))
    real_save = checkpoints.save

    def save_then_die(accelerator, folder, step, *args, **kwargs):
        out = real_save(accelerator, folder, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt("killed after the step-2 checkpoint")
        return out

    monkeypatch.setattr(checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(output_dir=str(tmp_path / "split"), checkpointing_steps=2)
    monkeypatch.setattr(checkpoints, "save", real_save)
    assert not (tmp_path / "split" / weights).exists()
    resumed = run(output_dir=str(tmp_path / "split"), checkpointing_steps=2, resume="latest")
    a, b = load_file(str(whole / weights)), load_file(str(resumed / weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(json.loads((resumed / "losses.json").read_text())["losses"]) == 4


@pytest.mark.parametrize("name", list(TRAINERS))
def test_mixed_precision_reaches_the_trainers_models(tmp_path, name):
    run, weights = TRAINERS[name]
    full = run(output_dir=str(tmp_path / "fp32"), mixed_precision="no")
    half = run(output_dir=str(tmp_path / "bf16"), mixed_precision="bf16")
    a, b = load_file(str(full / weights)), load_file(str(half / weights))
    assert all(v.dtype == torch.float32 for v in b.values())  # master weights stay float32
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the forward ran in bf16 autocast


def test_trainer_flags_take_both_spellings_booleans_and_a_config_file(tmp_path):
    config = tmp_path / "value.json"
    config.write_text(json.dumps({"num-samples": 16, "learning_rate": 0.5}))
    parsed = parse_config(
        ValueConfig,
        [
            "--output_dir",
            "runs/x",
            "--max-train-steps",
            "7",
            "--no-progress",
            "--gradient_accumulation_steps",
            "2",
            "--config",
            str(config),
            "--learning-rate",
            "0.25",
        ],
        "prog",
        "doc",
    )
    assert (parsed.output_dir, parsed.max_train_steps, parsed.progress, parsed.gradient_accumulation_steps) == ("runs/x", 7, False, 2)
    assert parsed.num_samples == 16 and parsed.learning_rate == 0.25  # the file sets, the command line wins
    assert parse_config(DistillConfig, ["--overwrite"], "prog", "doc").overwrite is True


@pytest.mark.parametrize("name", list(TRAINERS))
def test_a_second_run_into_the_same_folder_needs_resume_or_overwrite(tmp_path, name):
    run, _ = TRAINERS[name]
    run(output_dir=str(tmp_path / "run"), max_train_steps=1)
    with pytest.raises(ValueError, match="output_dir: .*--resume latest.*--overwrite"):
        run(output_dir=str(tmp_path / "run"), max_train_steps=1)
    assert run(output_dir=str(tmp_path / "run"), max_train_steps=1, overwrite=True).is_dir()
