"""Fine-tuning the families people ship (gen.training.families): SDXL, SD3 and Flux folders, full and LoRA, with
CEP and per-encoder dropout; outputs stock-loadable; SDXL micro-conditioning; the flow-matching objective; the
one-line refusals; FSDP on 2 CPU processes (slow tier) and through accelerate's launcher on GPUs (gpu)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import diffusers
import pytest
import torch
from safetensors.torch import load_file

from gen import testing as tiny
from gen.errors import ArgumentError
from gen.training.train import TrainConfig, train

FAMILIES = {
    "sdxl": (tiny.sdxl_pipeline, diffusers.StableDiffusionXLPipeline, "unet"),
    "sd3": (lambda: tiny.sd3_pipeline(text_encoders=True), diffusers.StableDiffusion3Pipeline, "transformer"),
    "flux": (lambda: tiny.flux_pipeline(guidance_embeds=True), diffusers.FluxPipeline, "transformer"),
}
FAST = dict(resolution=16, train_batch_size=4, max_train_steps=2, lr_warmup_steps=0, checkpointing_steps=0, progress=False, learning_rate=1e-2)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each family's tiny stock folder and a caption folder, built once."""
    root = tmp_path_factory.mktemp("families")
    for name, (build, _, _) in FAMILIES.items():
        build().save_pretrained(root / name)
    tiny.caption_folder(root / "data")
    return root


def run(folders, tmp_path, family, **options):
    return train(TrainConfig(data=str(folders / "data"), output_dir=str(tmp_path / "out"), init_from=str(folders / family), **{**FAST, **options}))


def weights(folder: Path, component: str) -> dict:
    return load_file(str(next((folder / component).glob("*.safetensors"))))


def sample(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt="a red cat", num_inference_steps=2, height=16, width=16, output_type="np", generator=torch.Generator().manual_seed(0), **kwargs).images


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_fine_tuning_saves_a_stock_folder_that_keeps_every_other_component(folders, tmp_path, family):
    _, cls, backbone = FAMILIES[family]
    out = run(folders, tmp_path, family, cep="gaussian")
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == cls.__name__
    before, after = weights(folders / family, backbone), weights(out, backbone)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the backbone trained
    for component in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        if (folders / family / component).is_dir():  # frozen: byte for byte the folder's
            a, b = weights(folders / family, component), weights(out, component)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text()) == json.loads(
        (folders / family / "scheduler" / "scheduler_config.json").read_text()
    )
    images = sample(cls.from_pretrained(out))
    assert images.shape == (1, 16, 16, 3) and (images != sample(cls.from_pretrained(folders / family))).any()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_lora_with_text_encoder_loras_loads_in_diffusers_and_in_gen_alike(folders, tmp_path, family):
    _, cls, _ = FAMILIES[family]
    out = run(folders, tmp_path, family, lora_rank=2, train_text_encoder=True)
    lora = out / "lora"
    stock = sample(cls.from_pretrained(folders / family))
    pipe = cls.from_pretrained(folders / family)
    pipe.load_lora_weights(lora)
    by_diffusers = sample(pipe)
    assert (by_diffusers != stock).any()
    from gen.generate import apply_lora

    pipe = cls.from_pretrained(folders / family)
    apply_lora(pipe, str(lora))
    assert (sample(pipe) == by_diffusers).all()
    trained = json.loads((lora / "gen_lora.json").read_text())["text_encoders"]
    assert trained == {"sdxl": ["text_encoder", "text_encoder_2"], "sd3": ["text_encoder", "text_encoder_2"], "flux": ["text_encoder"]}[family]
    keys = load_file(str(lora / "pytorch_lora_weights.safetensors")).keys()
    assert {k.split(".")[0] for k in keys} == {FAMILIES[family][2], *trained}
    assert not (out / "model_index.json").exists()  # a LoRA run saves the adapter, not a copy of the base


def test_lora_targets_default_to_the_familys_and_lora_layers_chooses(folders, tmp_path):
    out = run(folders, tmp_path, "flux", lora_rank=2)
    targets = set(json.loads((out / "lora" / "adapter_config.json").read_text())["target_modules"])
    assert {"attn.to_q", "attn.add_k_proj", "ff.net.2"} <= targets
    from gen.training.train import parse_args

    config = parse_args(["--data", "d", "--output-dir", "o", "--lora-layers", "attn.to_q,attn.to_k"])
    assert config.lora_targets == "attn.to_q,attn.to_k" and parse_args(["--data", "d", "--output_dir", "o", "--lora_layers", "x"]).lora_targets == "x"
    (tmp_path / "options.json").write_text(json.dumps({"lora-layers": "attn.to_v"}))  # the alias in a --config file too
    assert parse_args(["--data", "d", "--output-dir", "o", "--config", str(tmp_path / "options.json")]).lora_targets == "attn.to_v"
    out = run(folders, tmp_path / "chosen", "flux", lora_rank=2, lora_targets="attn.to_q,attn.to_k")
    assert set(json.loads((out / "lora" / "adapter_config.json").read_text())["target_modules"]) == {"attn.to_q", "attn.to_k"}


def test_full_text_encoder_training_changes_the_clip_encoders_and_leaves_t5(folders, tmp_path):
    out = run(folders, tmp_path, "sd3", train_text_encoder=True, text_encoder_lr=1e-2)
    for component, trained in (("text_encoder", True), ("text_encoder_2", True), ("text_encoder_3", False)):
        a, b = weights(folders / "sd3", component), weights(out, component)
        assert any(not torch.equal(a[k], b[k]) for k in a) == trained


# -- what the backbone is fed ------------------------------------------------------------------------------------------
def family(name, **options):
    from gen.training.families import family_of

    return family_of(FAMILIES[name][0](), TrainConfig(data="d", output_dir="o", **{**FAST, **options}))


def test_sdxl_time_ids_carry_each_images_original_size_and_crop(tmp_path):
    from gen.training.data import ImageFolderDataset

    data = tiny.caption_folder(tmp_path / "data", count=3, sizes=((24, 16), (16, 16), (16, 28)))
    centre = ImageFolderDataset(data, 16)
    assert [tuple(centre[i]["original_size"].tolist()) for i in range(3)] == [(16, 24), (16, 16), (28, 16)]  # (height, width)
    assert [tuple(centre[i]["crop_top_left"].tolist()) for i in range(3)] == [(0, 4), (0, 0), (6, 0)]
    batch = {k: torch.stack([centre[i][k] for i in range(3)]) for k in ("original_size", "crop_top_left")}
    sdxl = family("sdxl")
    inputs = sdxl.backbone_inputs({"prompt_embeds": torch.zeros(3, 16, 64), "pooled": torch.zeros(3, 32)}, batch)
    assert inputs["added_cond_kwargs"]["time_ids"].tolist() == [[16, 24, 0, 4, 16, 16], [16, 16, 0, 0, 16, 16], [28, 16, 6, 0, 16, 16]]
    flips = []
    for seed in range(4):
        flipped = ImageFolderDataset(data, 16, random_flip=True, seed=seed)
        for i in range(3):  # diffusers' script records a flipped crop's left edge as resolution - left
            top, left = centre[i]["crop_top_left"].tolist()
            flips.append(torch.equal(flipped[i]["pixel_values"], centre[i]["pixel_values"].flip(-1)))
            assert flipped[i]["crop_top_left"].tolist() == ([top, 16 - left] if flips[-1] else [top, left])
            assert flips[-1] or torch.equal(flipped[i]["pixel_values"], centre[i]["pixel_values"])
    assert any(flips) and not all(flips)


def test_random_crops_and_flips_come_from_seed_epoch_and_index(tmp_path):
    from gen.training.data import ImageFolderDataset

    data = tiny.caption_folder(tmp_path / "data", count=6, sizes=((40, 16),))
    a, b = ImageFolderDataset(data, 16, center_crop=False, random_flip=True), ImageFolderDataset(data, 16, center_crop=False, random_flip=True)
    corners = [a[i]["crop_top_left"].tolist() for i in range(6)]
    assert corners == [b[i]["crop_top_left"].tolist() for i in range(6)] and len({tuple(c) for c in corners}) > 1
    assert all(torch.equal(a[i]["pixel_values"], b[i]["pixel_values"]) for i in range(6))
    b.set_epoch(1)
    assert [b[i]["crop_top_left"].tolist() for i in range(6)] != corners  # a new epoch, new crops
    import numpy as np
    from PIL import Image

    unflipped = ImageFolderDataset(data, 16, center_crop=False)
    for i in range(6):  # the pixels are the resized image's at the recorded corner
        top, left = unflipped[i]["crop_top_left"].tolist()
        resized = np.asarray(Image.open(data / f"{i}.png").convert("RGB").resize((40, 16), Image.BICUBIC), dtype=np.float32) / 255.0
        expected = torch.from_numpy(resized[top : top + 16, left : left + 16]).permute(2, 0, 1) * 2 - 1
        assert torch.allclose(unflipped[i]["pixel_values"], expected, atol=1e-6)


def test_flux_gets_packed_latents_position_ids_and_its_guidance_value():
    flux = family("flux", guidance_scale=2.0)
    seen = {}

    def transformer(hidden_states, timestep, guidance, img_ids, encoder_hidden_states, pooled_projections, txt_ids, return_dict):
        seen.update(hidden=hidden_states.shape, t=timestep, guidance=guidance, img=img_ids.shape, txt=txt_ids.shape)
        return (hidden_states * 0,)

    embeds = flux.encode([["a red cat"] * 2, ["a red cat"] * 2])
    inputs = flux.backbone_inputs(embeds, {})
    flux.loss(transformer, torch.randn(2, 1, 8, 8), inputs, torch.Generator().manual_seed(0), diffusers.FlowMatchEulerDiscreteScheduler())
    assert seen["hidden"] == (2, 16, 4) and seen["img"] == (16, 3) and seen["txt"][1] == 3  # 8x8 latents in 2x2 patches
    assert seen["guidance"].tolist() == [2.0, 2.0] and (seen["t"] <= 1).all()  # timesteps / 1000, as FluxPipeline feeds them
    assert family("flux").guidance_embedded()


@pytest.mark.parametrize("scheme", ["sigma_sqrt", "logit_normal", "mode", "cosmap", "none"])
def test_the_flow_matching_loss_is_zero_for_the_velocity_and_weighted_per_scheme(scheme):
    """A predictor that knows x0 and reads sigma from the timestep returns the flow target noise - x0 exactly: the
    loss vanishes; predicting the opposite direction gives each scheme's weighted error."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    from gen.training.objectives import flow_matching_loss

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    config = TrainConfig(data="d", output_dir="o", weighting_scheme=scheme)
    x0 = torch.randn(64, 4, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # sigma_sqrt weights 1e6 at sigma 1e-3
    seen = {}

    def velocity(noisy, t):
        sigma = scheduler.sigmas[(scheduler.timesteps[None, :] == t[:, None]).int().argmax(dim=1)].double().reshape(-1, 1, 1, 1)  # the step's sigma
        seen["sigma"], seen["target"] = sigma, (noisy - x0) / sigma  # noise - x0, solved from x_t = (1 - sigma) x0 + sigma noise
        return seen["target"]

    assert flow_matching_loss(velocity, x0, scheduler, torch.Generator().manual_seed(0), config, "none") < 1e-8
    wrong = flow_matching_loss(lambda noisy, t: -velocity(noisy, t), x0, scheduler, torch.Generator().manual_seed(0), config, "none")
    weight = compute_loss_weighting_for_sd3(scheme, seen["sigma"])
    expected = (weight * (2 * seen["target"]) ** 2).reshape(64, -1).mean(dim=1).mean()
    assert wrong == pytest.approx(expected.item(), rel=1e-4)
    assert scheme not in ("sigma_sqrt", "cosmap") or weight.std() > 0  # these two weight by sigma


def test_timestep_densities_follow_the_logit_mean():
    from gen.training.objectives import flow_matching_loss

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    sigmas = {}
    for mean in (-2.0, 2.0):
        config = TrainConfig(data="d", output_dir="o", weighting_scheme="logit_normal", logit_mean=mean)

        def record(noisy, t, mean=mean):
            sigmas[mean] = t / 1000
            return noisy

        flow_matching_loss(record, torch.zeros(256, 1, 2, 2), scheduler, torch.Generator().manual_seed(0), config, "none")
    # u indexes the scheduler's timesteps, which run from the noisiest down (as in diffusers' scripts): a positive
    # logit mean trains mostly on low noise, a negative one on high noise
    assert sigmas[2.0].mean() < 0.25 < 0.75 < sigmas[-2.0].mean()


def test_cep_perturbs_every_text_embedding_of_kept_rows_only():
    from gen.conditioning import ConditionEmbeddingPerturbation
    from gen.training.families import FamilyCondition

    sd3 = family("sd3")
    condition = FamilyCondition(sd3)
    batch = {"caption": ["a red cat", "a blue dog", "a green cat", "a red dog"]}
    plain = condition(batch, torch.Generator().manual_seed(0), 0.5, None)
    noisy = condition(batch, torch.Generator().manual_seed(0), 0.5, ConditionEmbeddingPerturbation("gaussian", 1.0), torch.Generator().manual_seed(1))
    from gen.conditioning import drop_mask

    mask = drop_mask(4, 0.5, torch.Generator().manual_seed(0))
    assert mask.any() and not mask.all()
    for key in ("encoder_hidden_states", "pooled_projections"):
        changed = (plain[key] != noisy[key]).flatten(1).any(dim=1)
        assert changed.tolist() == (~mask).tolist(), key


def test_encoder_dropout_gives_one_encoder_alone_the_empty_caption():
    from gen.training.families import FamilyCondition

    sd3 = family("sd3", encoder_dropout="text_encoder_3=0.99")
    seen = []
    real = sd3.encode
    sd3.encode = lambda captions: (seen.append(captions), real(captions))[1]
    FamilyCondition(sd3)({"caption": ["a red cat", "a blue dog"]}, torch.Generator().manual_seed(0), 0.0, None)
    by_encoder = {name: {c for call in seen for c in call[i]} for i, name in enumerate(sd3.present)}  # the captions each encoder read
    assert set(by_encoder["text_encoder"]) == {"a blue dog", "a red cat"} and set(by_encoder["text_encoder_2"]) == {"a blue dog", "a red cat"}
    assert set(by_encoder["text_encoder_3"]) == {""}


# -- refusals ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family_name, options, match",
    [
        ("sdxl", dict(weighting_scheme="logit_normal"), r"^weighting_scheme: .*StableDiffusionXLPipeline.*epsilon"),
        ("sdxl", dict(guidance_scale=3.5), r"^guidance_scale: "),
        ("sdxl", dict(max_sequence_length=77), r"^max_sequence_length: .*no T5"),
        ("sdxl", dict(condition="class"), r"^condition: .*conditioned on text"),
        ("sd3", dict(prediction_type="v_prediction"), r"^prediction_type: .*flow-matching"),
        ("sd3", dict(snr_gamma=5.0), r"^snr_gamma: "),
        ("sd3", dict(weighting_scheme="uniform"), r"^weighting_scheme: one of"),
        ("sd3", dict(mode_scale=3.0), r"^mode_scale: "),
        ("sd3", dict(encoder_dropout="text_encoder_4=0.1"), r"^encoder_dropout: 'text_encoder_4' is not a text encoder"),
        ("sd3", dict(encoder_dropout="text_encoder_3=1.5"), r"^encoder_dropout: .*probability"),
        ("flux", dict(resolution=18), r"^resolution: 18 is not a multiple of 4"),
        ("flux", dict(max_sequence_length=2), r"^max_sequence_length: caption 0 .* is \d+ T5 tokens, over 2"),
        ("flux", dict(lora_rank=2, lora_targets="attn.to_q,attn.nothing"), r"^lora_targets: \['attn.nothing'\] name no module"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag_before_any_write(folders, tmp_path, family_name, options, match):
    with pytest.raises(ArgumentError, match=match) as caught:
        run(folders, tmp_path, family_name, **options)
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_schnell_style_flux_refuses_a_guidance_value(folders, tmp_path):
    tiny.flux_pipeline(guidance_embeds=False).save_pretrained(tmp_path / "schnell")
    with pytest.raises(ArgumentError, match=r"^guidance_scale: .*has none"):
        train(TrainConfig(data=str(folders / "data"), output_dir=str(tmp_path / "out"), init_from=str(tmp_path / "schnell"), guidance_scale=3.5, **FAST))


@pytest.mark.parametrize("flag, value", [("weighting_scheme", "logit_normal"), ("guidance_scale", 3.5), ("encoder_dropout", "text_encoder=0.1")])
def test_family_flags_on_a_model_of_no_family_are_refused(folders, tmp_path, flag, value):
    tiny.stable_diffusion_pipeline().save_pretrained(tmp_path / "sd")
    with pytest.raises(ArgumentError, match=rf"^{flag}: applies to fine-tuning .* StableDiffusionPipeline is none"):
        train(TrainConfig(data=str(folders / "data"), output_dir=str(tmp_path / "out"), init_from=str(tmp_path / "sd"), **{flag: value}, **FAST))
    assert not (tmp_path / "out").exists()


def test_a_family_pipeline_without_text_encoders_is_refused():
    from gen.training.families import family_of

    bare = family_of(tiny.sd3_pipeline(), TrainConfig(data="d", output_dir="o", **FAST))  # as a zoo entry could hand one over
    with pytest.raises(ArgumentError, match=r"^init_from: .*without its text encoders"):
        bare.check(None)


# -- gen's own tools on the output ---------------------------------------------------------------------------------------
def test_gen_sample_and_steer_take_the_fine_tuned_folder_and_its_lora(folders, tmp_path):
    from gen.cli import main

    full = run(folders, tmp_path / "full", "sdxl")
    assert main(["sample", str(full), "--prompt", "a red cat", "--num", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
    lora = run(folders, tmp_path / "lora", "sd3", lora_rank=2, train_text_encoder=True)
    argv = ["sample", str(folders / "sd3"), "--prompt", "a red cat", "--num", "1", "--steps", "2", "--out", str(tmp_path / "s"), "--name", "l.png"]
    assert main([*argv, "--lora", str(lora / "lora")]) == 0
    from gen.pipelines import steer

    pipe = steer(diffusers.StableDiffusionXLPipeline.from_pretrained(full))
    out = pipe(prompt="a red cat", num_inference_steps=2, height=16, width=16, output_type="np", generator=torch.Generator().manual_seed(0))
    stock = sample(diffusers.StableDiffusionXLPipeline.from_pretrained(full))
    assert (out.images == stock).all()


# -- sharding ------------------------------------------------------------------------------------------------------------
def torchrun(args, env=None):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=600)


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_resumes_a_killed_run_and_trains_what_ddp_trains(folders, tmp_path):
    """accelerate 1.16 sets FSDP up only on accelerator devices, so this runs through tests/fsdp_on_cpu.py, which
    turns accelerate's state to FSDP after its gloo group forms (see there); the GPU test below uses the launcher."""
    flags = ["--data", str(folders / "data"), "--init-from", str(folders / "sd3"), "--resolution", "16", "--train-batch-size", "2"]
    flags += ["--max-train-steps", "4", "--checkpointing-steps", "2", "--lr-warmup-steps", "0", "--no-progress", "--learning-rate", "1e-3"]
    whole = torchrun(["tests/fsdp_on_cpu.py", *flags, "--output-dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = torchrun(["tests/fsdp_on_cpu.py", "--die-after-checkpoint", "2", *flags, "--output-dir", str(tmp_path / "split")])
    assert killed.returncode != 0 and "KeyboardInterrupt" in killed.stderr
    shards = sorted(p.name for p in (tmp_path / "split" / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp_0").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one shard per process: a sharded checkpoint
    resumed = torchrun(["tests/fsdp_on_cpu.py", *flags, "--output-dir", str(tmp_path / "split"), "--resume", "latest"])
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr, resumed.stderr[-2000:]
    ddp = torchrun(["-m", "gen.training.train", *flags, "--output-dir", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    start, a, b, c = (weights(folder, "transformer") for folder in (folders / "sd3", tmp_path / "whole", tmp_path / "split", tmp_path / "ddp"))
    moved = max((a[k] - start[k]).abs().max() for k in a)
    # torch.distributed.checkpoint's optimizer-state round trip is not bit-exact (1.5e-8 measured), unlike DDP's
    assert moved > 1e-3 and max((a[k] - b[k]).abs().max() for k in a) < 1e-6 and max((a[k] - c[k]).abs().max() for k in a) < 1e-6
    losses = [json.loads((tmp_path / n / "losses.json").read_text())["losses"] for n in ("whole", "split")]
    assert losses[0] == losses[1]
    lora = torchrun(["tests/fsdp_on_cpu.py", *flags, "--lora-rank", "2", "--learning-rate", "1e-2", "--output-dir", str(tmp_path / "lora")])
    assert lora.returncode == 0, lora.stderr[-2000:]  # the adapter read out of the gathered state dict
    pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(folders / "sd3")
    stock = sample(pipe)
    pipe.load_lora_weights(tmp_path / "lora" / "lora")
    assert (sample(pipe) != stock).any()


def test_a_tampered_sharded_checkpoint_index_is_refused_before_torch_unpickles_it(folders, tmp_path):
    import pickle

    from gen.training import checkpoints

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    folder = tmp_path / "checkpoints" / "checkpoint-2"
    (folder / "pytorch_model_fsdp_0").mkdir(parents=True)
    (folder / "pytorch_model_fsdp_0" / ".metadata").write_bytes(pickle.dumps(Payload()))
    checkpoints.write_manifest(folder, 2, 0)
    with pytest.raises(checkpoints.CheckpointError, match=r"asks to load posix.system"):
        checkpoints.verify(folder)


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["fsdp.yaml", "deepspeed_zero2.yaml"])
def test_accelerate_launch_with_the_example_configs_trains_and_resumes(folders, tmp_path, config):
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    count = max(1, torch.cuda.device_count())
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "examples" / "accelerate" / config),
        "--num_processes",
        str(count),
    ]
    flags = ["-m", "gen.training.train", "--data", str(folders / "data"), "--init-from", str(folders / "sdxl"), "--resolution", "16"]
    flags += ["--max-train-steps", "4", "--checkpointing-steps", "2", "--lr-warmup-steps", "0", "--no-progress", "--output-dir", str(tmp_path / "out")]
    done = subprocess.run([*launch, *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert diffusers.StableDiffusionXLPipeline.from_pretrained(tmp_path / "out") is not None
    if config == "fsdp.yaml":
        again = subprocess.run(
            [*launch, *flags[:-2], "--max-train-steps", "6", "--output-dir", str(tmp_path / "out"), "--resume", "latest"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.returncode == 0 and "resumed from" in again.stdout + again.stderr, again.stderr[-3000:]
    shutil.rmtree(tmp_path / "out")


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharding_launch_that_accelerate_cannot_set_up_is_refused_not_run_unsharded(folders, tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, "true")  # what `accelerate launch --config_file examples/accelerate/...` sets; on a CPU accelerate ignores it
    if variable.endswith("DEEPSPEED") and importlib.util.find_spec("deepspeed") is None:
        match = r"^config_file: the accelerate launch asked for DeepSpeed, which is not installed"
    else:
        match = r"^config_file: the accelerate launch asked for (FSDP|DEEPSPEED), but accelerate set up NO"
    with pytest.raises(ArgumentError, match=match):
        run(folders, tmp_path, "sdxl")
    assert not (tmp_path / "out").exists()


def test_sdxl_trains_dropped_rows_on_the_zeros_its_sampling_feeds_the_unconditional_branch():
    from gen.training.families import FamilyCondition
    from gen.conditioning import drop_mask

    sdxl = family("sdxl")
    batch = {"caption": ["a red cat", "a blue dog", "a green cat", "a red dog"]}
    inputs = FamilyCondition(sdxl)(batch, torch.Generator().manual_seed(0), 0.5, None)
    dropped = drop_mask(4, 0.5, torch.Generator().manual_seed(0))
    assert dropped.any() and not dropped.all() and sdxl.pipe.config.force_zeros_for_empty_prompt
    for tensor in (inputs["encoder_hidden_states"], inputs["added_cond_kwargs"]["text_embeds"]):
        assert (tensor.flatten(1).abs().sum(dim=1) == 0).tolist() == dropped.tolist()
    sdxl.pipe.register_to_config(force_zeros_for_empty_prompt=False)  # a folder saved so: the empty caption's encoding
    inputs = FamilyCondition(sdxl)(batch, torch.Generator().manual_seed(0), 0.5, None)
    assert (inputs["encoder_hidden_states"].flatten(1).abs().sum(dim=1) > 0).all()


def test_a_pipeline_the_trainer_cannot_feed_is_refused_by_name(folders, tmp_path):
    tiny.sdxl_pipeline(refiner=True).save_pretrained(tmp_path / "refiner")
    with pytest.raises(ArgumentError, match=r"^init_from: gen train fine-tunes .*StableDiffusionXLPipeline.*a StableDiffusionXLImg2ImgPipeline is none"):
        train(TrainConfig(data=str(folders / "data"), output_dir=str(tmp_path / "out"), init_from=str(tmp_path / "refiner"), **FAST))
    assert not (tmp_path / "out").exists()


def test_validation_samples_come_from_the_fine_tuned_family_pipeline(folders, tmp_path):
    out = run(folders, tmp_path, "flux", validation_prompts="a red cat|a blue dog", validation_steps=1)
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step-1.png", "step-2.png"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_latents_are_what_the_pipelines_decoding_inverts(name):
    """Stock pipelines decode latents / scaling_factor + shift_factor (SD3, Flux) or latents / scaling_factor (SDXL):
    the latents trained on must map back to the VAE's own sample that way."""
    trainer = family(name)
    vae = trainer.pipe.vae
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = trainer.latents(vae, pixels, torch.Generator().manual_seed(1))
    sample = vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(1))
    shift = vae.config.shift_factor or 0.0
    assert (name == "sdxl") == (shift == 0.0)
    assert torch.allclose(latents / vae.config.scaling_factor + shift, sample, atol=1e-6)
