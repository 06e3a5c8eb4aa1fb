"""Folders in and out, the way a diffusers user moves them: a stock Stable Diffusion or DiT folder fine-tuned by
gen's trainer stays a stock folder (class, scheduler, text encoder kept); every folder gen writes loads
with DiffusionPipeline.from_pretrained; a LoRA trained by gen loads with pipe.load_lora_weights and with
`gen sample --lora`; checkpointed training folders sample."""

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, DiTPipeline, StableDiffusionPipeline
from PIL import Image

from gen import cli
from gen import testing as tiny
from gen.training.train import TrainConfig, train

pytestmark = pytest.mark.slow


def image_folder(root, captions=None, classes=None, size=16, count=8):
    """count random RGB images with a metadata.jsonl of captions, or in class subfolders."""
    rng = np.random.RandomState(0)
    root.mkdir(parents=True)
    rows = []
    for i in range(count):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(exist_ok=True)
        Image.fromarray((rng.rand(size, size, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
        if captions:
            rows.append({"file_name": f"{i}.png", "text": captions[i % len(captions)]})
    if rows:
        (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


FAST = dict(resolution=16, train_batch_size=4, max_train_steps=2, lr_warmup_steps=0, checkpointing_steps=1, progress=False)


def test_a_stock_stable_diffusion_folder_fine_tuned_with_cep_stays_stock(tmp_path):
    stock = tiny.stable_diffusion_pipeline()
    stock.save_pretrained(tmp_path / "sd")
    data = image_folder(tmp_path / "data", captions=["a cat", "a red dog"])
    out = train(TrainConfig(data=str(data), output_dir=str(tmp_path / "tuned"), condition="text", init_from=str(tmp_path / "sd"), cep="gaussian", **FAST))
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    for loader in (StableDiffusionPipeline, DiffusionPipeline):
        pipe = loader.from_pretrained(out)
        assert type(pipe) is StableDiffusionPipeline and type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.text_encoder is not None
    tuned = StableDiffusionPipeline.from_pretrained(out)
    assert not all(torch.equal(a, b) for a, b in zip(tuned.unet.state_dict().values(), stock.unet.state_dict().values()))
    assert (out / "checkpoints" / "checkpoint-2" / "manifest.json").exists()  # checkpoints beside the weights don't block loading


def test_a_stock_dit_folder_fine_tuned_stays_stock(tmp_path):
    tiny.dit_pipeline().save_pretrained(tmp_path / "dit")
    data = image_folder(tmp_path / "data", classes=["0", "1"])
    out = train(TrainConfig(data=str(data), output_dir=str(tmp_path / "tuned"), condition="class", init_from=str(tmp_path / "dit"), cep="uniform", **FAST))
    pipe = DiffusionPipeline.from_pretrained(out)
    assert type(pipe) is DiTPipeline
    assert pipe(class_labels=[0, 1], num_inference_steps=2, output_type="np").images.shape == (2, 16, 16, 3)


def test_every_folder_gen_writes_loads_with_diffusers(tmp_path):
    out = train(
        TrainConfig(
            data="digits",
            output_dir=str(tmp_path / "run"),
            condition="class",
            resolution=8,
            block_out_channels="8,16",
            layers_per_block=1,
            attention_levels="1",
            attention_head_dim=4,
            train_batch_size=8,
            max_train_steps=2,
            lr_warmup_steps=0,
            checkpointing_steps=1,
            progress=False,
        )
    )
    with pytest.raises(ValueError, match=r"gen_pipeline.py"):
        DiffusionPipeline.from_pretrained(out)  # diffusers' own message names the file, which names the gen class
    assert "gen.pipelines.ClassConditionalPipeline" in (out / "gen_pipeline.py").read_text()
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    assert type(pipe).__name__ == "ClassConditionalPipeline"
    assert cli.main(["sample", str(out), "--class-labels", "1", "2", "--steps", "2", "--out", str(tmp_path / "samples")]) == 0  # checkpointed folder samples


def test_a_lora_trained_by_gen_loads_the_diffusers_way_and_in_gen_sample(tmp_path):
    stock = tiny.stable_diffusion_pipeline()
    stock.save_pretrained(tmp_path / "sd")
    data = image_folder(tmp_path / "data", captions=["a cat"])
    out = train(
        TrainConfig(
            data=str(data),
            output_dir=str(tmp_path / "lora-run"),
            condition="text",
            init_from=str(tmp_path / "sd"),
            lora_rank=2,
            lora_targets="to_q,to_k,to_v,to_out.0",
            learning_rate=1e-2,
            **FAST,
        )
    )
    lora = out / "lora"
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    kwargs = dict(prompt="a cat", num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0))
    before = pipe(**kwargs).images
    pipe.load_lora_weights(lora)
    after = pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0))).images
    assert not torch.equal(before, after)
    assert cli.main(["sample", str(tmp_path / "sd"), "--prompt", "a cat", "--lora", str(lora), "--steps", "2", "--num", "1", "--out", str(tmp_path / "s")]) == 0


def test_gen_sample_refuses_models_that_do_not_generate_in_one_line(capsys):
    for name, purpose in (
        ("digits-classifier", "a classifier"),
        ("patch-encoder", "an image encoder"),
        ("digits-value", "a value network"),
        ("digits-ppap", "classifier-guidance experts"),
    ):
        assert cli.main(["sample", name]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and purpose in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "ihc-text-grid", "--prompt", "retina fundus photograph", "--num", "1", "--steps", "2"],
        ["sample", "ihc-patches", "--reference", "REF", "--num", "1", "--steps", "2"],
        ["sample", "digits", "--class-labels", "3", "--lora", "digits-bold-lora", "--steps", "2"],
        ["sample", "digits-distilled", "--class-labels", "1", "2", "--steps", "2"],
    ],
)
def test_gen_sample_works_for_every_generative_zoo_model(argv, tmp_path):
    Image.fromarray((np.random.RandomState(1).rand(32, 32, 3) * 255).astype("uint8")).save(tmp_path / "ref.png")
    argv = [str(tmp_path / "ref.png") if a == "REF" else a for a in argv] + ["--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert (tmp_path / "samples.png").exists() and json.loads((tmp_path / "samples.json").read_text())["nfe"] > 0


def test_gen_sample_regenerates_a_reference_with_a_saved_large_image_pipeline(tmp_path):
    from gen import zoo
    from gen.pipelines import LargeImagePipeline

    LargeImagePipeline.from_pipe(zoo.load("ihc-patches")).save_pretrained(tmp_path / "large")
    Image.fromarray((np.random.RandomState(1).rand(40, 56, 3) * 255).astype("uint8")).save(tmp_path / "ref.png")
    argv = ["sample", str(tmp_path / "large"), "--reference", str(tmp_path / "ref.png"), "--num", "2", "--steps", "2", "--scale", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    with Image.open(tmp_path / "samples.png") as image:
        assert image.height == 40 and image.width > 2 * 56  # two images of the reference's size, side by side
    assert json.loads((tmp_path / "samples.json").read_text())["nfe"] > 0


def test_gen_sample_side_files_never_replace_existing_ones(tmp_path, capsys):
    (tmp_path / "model_index.json").write_text("{}")
    assert cli.main(["sample", "digits", "--class-labels", "1", "--steps", "2", "--out", str(tmp_path), "--name", "model_index.png"]) == 2
    assert "model_index.json already exists" in capsys.readouterr().err
    assert (tmp_path / "model_index.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["model_index.json"]
