"""Nothing a run did not write is deleted or replaced; config values are typed strictly; a run folder is
locked while a run holds it; what used to run silently or fail with a raw library message is now either
the right answer or one clear error naming the argument (or file) and the fix, before any work or write."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from PIL import Image

from gen import Denoiser, SamplingHook, cli, sample
from gen import testing as tiny
from gen.conditioning import CADS
from gen.embedders import CallableEmbedder, PatchEncoder
from gen.errors import ArgumentError, GenError, WriteError
from gen.guidance import SVDD, FKSteering, PosteriorMeanValue
from gen.io import RUN_LOCK, save_safetensors
from gen.pipelines import steer
from gen.training.data import ImageFolderDataset
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
TINY_FLAGS = [
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
    "--max-train-steps",
    "1",
    "--checkpointing-steps",
    "0",
]


def brightness(images):
    return images.mean(dim=(1, 2, 3))


# -- nothing a run did not write is deleted or replaced -----------------------------------------------------------------
def test_overwrite_removes_only_the_checkpoints_gen_wrote(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), max_train_steps=2, checkpointing_steps=1, **TINY))
    keep = run / "checkpoints" / "keep-best"
    keep.mkdir()
    (keep / "weights.safetensors").write_bytes(b"mine")
    (run / "checkpoints" / "checkpoint-7").mkdir()  # a gen-style name without gen's manifest: the user's
    train(TrainConfig(output_dir=str(run), max_train_steps=1, checkpointing_steps=0, overwrite=True, **TINY))
    assert (keep / "weights.safetensors").read_bytes() == b"mine"
    assert (run / "checkpoints" / "checkpoint-7").is_dir()
    assert not (run / "checkpoints" / "checkpoint-1").exists() and not (run / "checkpoints" / "checkpoint-2").exists()


def test_a_second_sample_into_the_same_name_is_refused_and_overwrite_replaces_both_files(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sample", "digits", "--class-labels", "1", "--steps", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    image, side = (out / "samples.png").read_bytes(), (out / "samples.json").read_text()
    assert cli.main(argv + ["--seed", "1"]) == 2
    said = capsys.readouterr().err
    assert "name:" in said and "--overwrite" in said and "--name" in said
    assert (out / "samples.png").read_bytes() == image and (out / "samples.json").read_text() == side
    assert sorted(p.name for p in out.iterdir()) == ["samples.json", "samples.png"]
    assert cli.main(argv + ["--seed", "1", "--overwrite"]) == 0
    assert (out / "samples.png").read_bytes() != image and json.loads((out / "samples.json").read_text())["seed"] == 1


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("overwrite", "false", "overwrite"),
        ("max_train_steps", 2.5, "max_train_steps"),
        ("learning_rate", None, "learning_rate"),
        ("seed", 1e23, "seed"),
        ("progress", 0, "progress"),
        ("resolution", "8", "resolution"),
        ("learning_rate", "3e-4", "learning_rate"),
    ],
)
def test_config_values_are_typed_strictly(tmp_path, capsys, key, value, named):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({key: value}))
    status = train_main([*TINY_FLAGS, "--output-dir", str(tmp_path / "run"), "--config", str(config)])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"error: {named}: {config} sets it to ")
    assert not (tmp_path / "run").exists()


def test_a_config_file_can_carry_every_option_the_required_ones_included(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY, "output_dir": str(tmp_path / "run"), "max_train_steps": 1, "checkpointing_steps": 0}))
    assert train_main(["--config", str(config)]) == 0
    assert (tmp_path / "run" / "model_index.json").is_file()


def test_a_run_folder_held_by_another_run_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from gen.io import lock_output_dir; import time; lock_output_dir({str(run)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        status = train_main([*TINY_FLAGS, "--output-dir", str(run)])
        said = capsys.readouterr().err
        assert status == 2 and f'"pid": {holder.pid}' in said and "in use by another gen run" in said
        assert sorted(p.name for p in run.iterdir()) == [RUN_LOCK]
    finally:
        holder.kill()
        holder.wait()
    assert train_main([*TINY_FLAGS, "--output-dir", str(run)]) == 0  # the lock goes with its holder


def test_a_finished_run_lets_go_of_its_folder(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), max_train_steps=1, checkpointing_steps=0, **TINY))
    other = subprocess.run(
        [sys.executable, "-c", f"from gen.io import lock_output_dir; lock_output_dir({str(run)!r}); print('ok')"], capture_output=True, text=True
    )
    assert other.stdout.strip() == "ok", other.stderr


# -- what ran silently ------------------------------------------------------------------------------------------------
def test_16_bit_images_in_a_training_folder_keep_their_values(tmp_path):
    ramp = np.linspace(0, 1, 16 * 16).reshape(16, 16) * 0.6 + 0.2
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "a.png")
    Image.fromarray((ramp * 255).round().astype(np.uint8)).save(tmp_path / "b.png")
    data = ImageFolderDataset(tmp_path, resolution=16)
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    deep, shallow = data[0]["pixel_values"], data[1]["pixel_values"]
    assert deep.shape == shallow.shape == (3, 16, 16)
    assert (deep - shallow).abs().max() < 3 / 255, "a 16-bit PNG must read as the same picture, not white"


def _folder(tmp_path, rows):
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"file_name": "0.png", "text": None}, {"file_name": "1.png", "text": "b"}], r"'text' of 0.png is None"),
        ([{"file_name": "0.png", "text": " "}, {"file_name": "1.png", "text": "b"}], r"'text' of 0.png is ' '"),
        ([{"file_name": "0.png", "label": 0}, {"file_name": "1.png", "label": 1}, {"file_name": "0.png", "label": 1}], r"line 3 repeats file_name '0.png'"),
    ],
)
def test_metadata_a_caption_or_row_that_would_train_wrongly_is_named(tmp_path, rows, match):
    with pytest.raises(ArgumentError, match=match):
        ImageFolderDataset(_folder(tmp_path, rows), resolution=8)


def test_a_corrupt_gif_and_a_decompression_bomb_are_named_before_training(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.gif").write_bytes(b"GIF89a\x08\x00\x08\x00garbage")
    with pytest.raises(ArgumentError, match=r"broken.gif is not a readable image"):
        ImageFolderDataset(tmp_path, resolution=8)
    (tmp_path / "broken.gif").unlink()
    Image.new("1", (12000, 12000)).save(tmp_path / "huge.png")
    with pytest.raises(ArgumentError, match=r"huge.png has more than .* pixels"):
        ImageFolderDataset(tmp_path, resolution=8)


def test_the_preflight_reads_the_files_the_loader_reads(tmp_path):
    from gen.data.files import image_files

    for name in ("a.png", "b.GIF", "c.webp", ".hidden.png", "__macosx/d.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.GIF", "c.webp"]


def test_a_lora_with_non_finite_weights_or_scale_is_refused(tmp_path):
    from gen.training.lora import add_lora, save_lora

    model = tiny.tiny_unet(num_class_embeds=11)
    config = add_lora(model, 2)
    for parameter in [p for n, p in model.named_parameters() if "lora_B" in n][:1]:
        parameter.data.fill_(float("nan"))
    save_lora(model, config, tmp_path / "nan")
    pipe = tiny.class_pipeline()
    with pytest.raises(ArgumentError, match=r"lora: .* non-finite"):
        pipe.load_lora_weights(tmp_path / "nan")
    with pytest.raises(ArgumentError, match=r"adapter_scale: must be finite"):
        pipe.load_lora_weights(tmp_path / "nan", adapter_scale=float("nan"))


def test_gen_sample_writes_nothing_when_the_model_gives_non_finite_images(tmp_path, capsys):
    pipe = tiny.class_pipeline()
    with torch.no_grad():
        next(pipe.unet.parameters()).fill_(float("nan"))
    pipe.save_pretrained(tmp_path / "model")
    assert cli.main(["sample", str(tmp_path / "model"), "--class-labels", "1", "--steps", "2", "--out", str(tmp_path / "out")]) == 2
    assert "non-finite" in capsys.readouterr().err
    assert not any((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize(
    "argv, named",
    [
        (["sample", "digits", "--reference", "x.png"], "reference"),
        (["sample", "ihc-patches", "--class-labels", "1"], "class_labels"),
        (["sample", "digits", "--scale", "0"], "scale"),
        (["sample", "digits", "--num", "0"], "num"),
        (["sample", "digits", "--seed", "1e23"], "seed"),
        (["sample", "digits", "--seed", str(2**70)], "seed"),
        (["sample", "digits", "--class-labels", "circle"], "class_labels"),
        (["sample", "digits", "--stpes", "2"], "stpes"),
        (["zoo", "build"], "name"),
        (["zoo", "build", "imagenet"], "name"),
    ],
)
def test_a_flag_the_model_cannot_use_is_named_not_ignored(tmp_path, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(tmp_path)
    import gen.zoo.recipes

    monkeypatch.setattr(gen.zoo.recipes, "build", lambda name: pytest.fail("a bare zoo build started retraining"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}: ") and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir()), "a refused command wrote"


def test_class_names_the_model_saved_are_taken_where_labels_are(tmp_path):
    pipe = tiny.class_pipeline()
    pipe.register_to_config(class_names=[f"c{i}" for i in range(10)])
    pipe.save_pretrained(tmp_path / "model")
    by_name = ["sample", str(tmp_path / "model"), "--class-labels", "c3", "c4", "--steps", "2", "--out", str(tmp_path / "a")]
    by_index = ["sample", str(tmp_path / "model"), "--class-labels", "3", "4", "--steps", "2", "--out", str(tmp_path / "b")]
    assert cli.main(by_name) == 0 and cli.main(by_index) == 0
    assert (tmp_path / "a" / "samples.png").read_bytes() == (tmp_path / "b" / "samples.png").read_bytes()


@pytest.mark.parametrize("problem", ["dangling", "read-only"])
def test_an_unusable_out_folder_is_named_before_any_model_is_loaded(tmp_path, monkeypatch, capsys, problem):
    out = tmp_path / "out"
    if problem == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    else:
        out.mkdir()
        out.chmod(0o500)
        if os.access(out, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
    monkeypatch.setattr(cli, "load_for_sampling", lambda model: pytest.fail("loaded a model before checking --out"))
    assert cli.main(["sample", "digits", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: out: ")


def test_uint8_images_to_the_patch_encoder_are_read_as_0_to_255():
    encoder = PatchEncoder().eval()
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(encoder.embed_images(pixels), encoder.embed_images(pixels.float() / 255), atol=1e-6)
    with pytest.raises(ArgumentError, match=r"images: float images must lie in \[0, 1\]"):
        encoder.embed_images(pixels.float())


def test_an_embedder_that_returns_too_few_rows_is_named():
    pipe = tiny.embedding_pipeline()
    width = pipe.embedding_width
    pipe.set_embedder(CallableEmbedder(lambda im: torch.zeros(1, width)))
    with pytest.raises(ArgumentError, match=r"embedder: .* for 2 images"):
        pipe(images=torch.rand(2, 3, 32, 32), num_inference_steps=2)


def test_custom_timesteps_on_a_scheduler_not_set_to_them_are_set_or_refused(count_calls):
    unet = tiny.tiny_unet()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fresh = DDPMScheduler(num_train_timesteps=100)
    got = sample(Denoiser(unet, fresh), x, timesteps=[80, 40, 0], generator=torch.Generator().manual_seed(1)).samples
    ready = DDPMScheduler(num_train_timesteps=100)
    ready.set_timesteps(timesteps=[80, 40, 0])
    expected = sample(Denoiser(unet, ready), x, timesteps=ready.timesteps, generator=torch.Generator().manual_seed(1)).samples
    assert torch.equal(got, expected)
    calls = count_calls(unet)
    with pytest.raises(ArgumentError, match=r"timesteps: DDIMScheduler is not set to these timesteps and takes no custom ones"):
        sample(Denoiser(unet, DDIMScheduler(num_train_timesteps=100)), x, timesteps=[80, 40, 0])
    assert calls.calls == 0


def test_hooks_that_would_be_no_ops_are_refused_before_any_model_call(count_calls):
    pipe = steer(tiny.ddim_pipeline())
    calls = count_calls(pipe.unet)
    with pytest.raises(ArgumentError, match=r"resample_every: 50 is not shorter than the 4-step schedule"):
        pipe(batch_size=1, num_inference_steps=4, eta=1.0, hooks=[FKSteering(brightness, resample_every=50)])
    with pytest.raises(ArgumentError, match=r"hooks: CADS anneals the condition, but this run has none"):
        pipe(batch_size=1, num_inference_steps=4, hooks=[CADS()])
    with pytest.raises(ArgumentError, match=r"num_candidates: 50000000 candidates .* GiB"):
        pipe(batch_size=1, num_inference_steps=2, eta=1.0, hooks=[SVDD(PosteriorMeanValue(brightness), num_candidates=50_000_000)])
    assert calls.calls == 0


def test_cads_still_runs_on_a_conditional_model():
    pipe = tiny.class_pipeline()
    out = pipe(class_labels=[1, 2], num_inference_steps=3, guidance_scale=3.0, hooks=[CADS()], output_type="pt")
    assert torch.isfinite(out.images).all()


class _ForgetsToReturn(SamplingHook):
    def condition(self, step, cond):
        cond = dict(cond)


class _TransitionForgets(SamplingHook):
    def transition(self, state, ctx):
        ctx.proceed(state)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda u, x: sample(Denoiser(u, DDIMScheduler()), x, num_inference_steps=2, cond={"class_labels": torch.tensor([0.5, 1.0])}),
            ArgumentError,
            r"cond\['class_labels'\]: .* 1-D integer",
        ),
        (
            lambda u, x: sample(Denoiser(u, DDIMScheduler()), x, num_inference_steps=2, cond={"class_labels": torch.tensor([[1], [2]])}),
            ArgumentError,
            r"cond\['class_labels'\]: .* shape \(2, 1\)",
        ),
        (lambda u, x: Denoiser(u, "DDIMScheduler"), TypeError, r"scheduler: expected a diffusers scheduler object, got str"),
        (lambda u, x: Denoiser(u, DDIMScheduler), TypeError, r"scheduler: expected a diffusers scheduler object, got the class DDIMScheduler"),
        (
            lambda u, x: sample(Denoiser(u, DDIMScheduler()), x, num_inference_steps=2, cond={"class_labels": torch.tensor([1, 2])}, hooks=[CADS]),
            TypeError,
            r"hooks\[0\]: got the class CADS",
        ),
        (
            lambda u, x: sample(
                Denoiser(u, DDIMScheduler()), x, num_inference_steps=2, cond={"class_labels": torch.tensor([1, 2])}, hooks=[_ForgetsToReturn()]
            ),
            TypeError,
            r"hooks: _ForgetsToReturn.condition\(\) returned NoneType",
        ),
        (
            lambda u, x: sample(
                Denoiser(u, DDIMScheduler()), x, num_inference_steps=2, cond={"class_labels": torch.tensor([1, 2])}, hooks=[_TransitionForgets()]
            ),
            TypeError,
            r"hooks: _TransitionForgets.transition\(\) returned NoneType",
        ),
    ],
)
def test_core_inputs_are_named(call, error, match):
    unet = tiny.tiny_unet(num_class_embeds=11)
    with pytest.raises(error, match=match):
        call(unet, torch.randn(2, 3, 8, 8))


def test_a_generator_of_hooks_is_taken_as_a_list():
    unet = tiny.tiny_unet(num_class_embeds=11)
    kwargs = dict(num_inference_steps=3, cond={"class_labels": torch.tensor([1, 2])}, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    listed = sample(Denoiser(unet, DDIMScheduler(num_train_timesteps=100)), x, hooks=[CADS(seed=3)], **kwargs).samples
    kwargs["generator"] = torch.Generator().manual_seed(0)
    generated = sample(Denoiser(unet, DDIMScheduler(num_train_timesteps=100)), x, hooks=(h for h in [CADS(seed=3)]), **kwargs).samples
    assert torch.equal(listed, generated)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(num_images_per_prompt=0), "num_images_per_prompt"),
        (dict(latents=torch.randn(1, 4, 8, 8, dtype=torch.float64)), "latents"),
    ],
)
def test_steer_names_what_stock_fails_on_with_a_raw_error(kwargs, named):
    if "batch_size" in kwargs:
        pipe, call = steer(tiny.ddim_pipeline()), dict(num_inference_steps=2)
    else:
        pipe, call = steer(tiny.stable_diffusion_pipeline()), dict(prompt_embeds=torch.randn(1, 4, 32), num_inference_steps=2, output_type="pt")
    with pytest.raises(GenError, match=rf"^{named}: "):
        pipe(**call, **kwargs)


def test_a_pipeline_callback_naming_a_missing_tensor_is_refused_as_stock_refuses_it():
    from diffusers.callbacks import PipelineCallback

    class Reads(PipelineCallback):
        tensor_inputs = ["nope"]

        def callback_fn(self, pipe, i, t, kwargs):
            return kwargs

    sd = tiny.stable_diffusion_pipeline()
    call = dict(prompt_embeds=torch.randn(1, 4, 32), num_inference_steps=2, callback_on_step_end=Reads(), output_type="pt")
    with pytest.raises(ValueError) as stock:
        sd(**call)
    with pytest.raises(ValueError) as steered:
        steer(sd)(**call)
    assert str(steered.value) == str(stock.value)


# -- unclear messages, now named ---------------------------------------------------------------------------------------
def test_a_lora_of_another_model_or_rank_or_a_corrupt_config_is_named_and_the_model_is_untouched(tmp_path):
    from gen.training.lora import add_lora, save_lora

    source = tiny.tiny_unet(num_class_embeds=11)
    save_lora(source, add_lora(source, 2), tmp_path / "lora")
    other = tiny.tiny_condition_unet()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ArgumentError, match=r"lora: .* no module of this UNet2DConditionModel"):
        from gen.core.lora import load_lora

        load_lora(other, tmp_path / "lora")
    assert set(other.state_dict()) == set(before), "a refused LoRA left adapters in the model"
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({**config, "r": 4}))
    with pytest.raises(ArgumentError, match=r"lora: .* rank 4 .* another shape"):
        tiny.class_pipeline().load_lora_weights(tmp_path / "lora")
    (tmp_path / "lora" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ArgumentError, match=r"lora: .*adapter_config.json is not a readable peft LoRA config"):
        tiny.class_pipeline().load_lora_weights(tmp_path / "lora")


def test_a_full_disk_names_the_file_and_replaces_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    target = tmp_path / "weights.safetensors"
    save_safetensors(target, {"w": torch.ones(2)})
    before = target.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(WriteError, match=rf"{target}: could not be written \(.*No space left"):
        save_safetensors(target, {"w": torch.zeros(2)})
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]
