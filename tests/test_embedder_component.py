"""The image embedder is a pipeline component (``image_encoder`` + ``feature_extractor``, diffusers' names):
in `.components`, moved by `.to()`, saved and loaded back with the pipeline, by gen and by diffusers."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline

from gen import testing as tiny
from gen.embedders import PatchEncoder, TransformersEmbedder
from gen.pipelines import EmbeddingToImagePipeline, HybridDistilledPipeline
from gen.pipelines.loading import load_pipeline

PATCHES = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def patch_encoder() -> PatchEncoder:
    torch.manual_seed(0)
    return PatchEncoder(patch_size=16, width=8, embedding_dim=tiny.EMBEDDING_WIDTH, projection_dim=8).eval()


def saved_vit(folder):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(
        ViTConfig(hidden_size=tiny.EMBEDDING_WIDTH, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=16, patch_size=8)
    ).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return str(folder)


def test_a_patch_encoder_is_the_image_encoder_component_and_follows_to():
    pipe, encoder = tiny.embedding_pipeline(), patch_encoder()
    pipe.set_embedder(encoder)
    assert pipe.components["image_encoder"] is encoder and pipe.embedder is encoder
    pipe.to(torch.float64)
    assert encoder.dtype == torch.float64
    assert pipe(images=PATCHES, num_inference_steps=2, output_type="pt").images.dtype == torch.float64


def test_a_callable_embedder_is_used_but_is_not_a_component():
    pipe = tiny.embedding_pipeline()  # set_embedder(CallableEmbedder)
    assert pipe.components["image_encoder"] is None
    assert pipe.embed(PATCHES).shape == (3, tiny.EMBEDDING_WIDTH)


@pytest.mark.parametrize("loader", ["gen", "diffusers"])
def test_the_image_encoder_is_saved_and_loaded_back_with_the_pipeline(tmp_path, loader):
    pipe = tiny.embedding_pipeline()
    pipe.set_embedder(patch_encoder())
    before = pipe.embed(PATCHES)
    images = pipe(images=PATCHES, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipe.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["image_encoder"] == ["gen.embedders", "PatchEncoder"]
    if loader == "gen":
        loaded = load_pipeline(tmp_path / "pipe")
    else:
        loaded = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    assert isinstance(loaded.image_encoder, PatchEncoder)
    assert torch.equal(loaded.embed(PATCHES), before)
    again = loaded(images=PATCHES, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(again, images)


def test_a_transformers_encoder_is_held_as_image_encoder_and_feature_extractor(tmp_path):
    path = saved_vit(tmp_path / "vit")
    pipe = tiny.embedding_pipeline()
    pipe.set_embedder(TransformersEmbedder.from_pretrained(path, pooling="mean"))
    assert type(pipe.image_encoder).__name__ == "ViTModel" and type(pipe.feature_extractor).__name__.startswith("ViTImageProcessor")
    before = pipe.embed(PATCHES)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = load_pipeline(tmp_path / "pipe")
    assert loaded.config.embedder_pooling == "mean"
    assert torch.allclose(loaded.embed(PATCHES), before, atol=1e-6)
    cls_pooled = TransformersEmbedder(loaded.image_encoder, loaded.feature_extractor, "cls").embed_images(PATCHES)
    assert not torch.allclose(cls_pooled, before, atol=1e-3)  # the saved pooling, not the default, was used


def test_an_embedder_named_by_spec_loads_on_first_use_on_the_pipelines_device_and_dtype(tmp_path):
    patch_encoder().save_pretrained(tmp_path / "encoder")
    unet = tiny.embedding_pipeline().unet
    pipe = EmbeddingToImagePipeline(scheduler=tiny.embedding_pipeline().scheduler, unet=unet, embedder=str(tmp_path / "encoder"))
    assert pipe.components["image_encoder"] is None
    pipe.to(torch.float64)
    embeddings = pipe.embed(PATCHES)
    assert isinstance(pipe.image_encoder, PatchEncoder) and pipe.image_encoder.dtype == torch.float64
    assert torch.allclose(embeddings, patch_encoder().embed_images(PATCHES), atol=1e-5)


def test_the_zoo_embedding_model_comes_with_its_encoder():
    import gen.zoo as zoo

    pipe = zoo.load("ihc-patches")
    assert isinstance(pipe.components["image_encoder"], PatchEncoder)
    pipe.to(torch.float64)
    assert pipe.image_encoder.dtype == torch.float64


def test_the_trainer_saves_a_non_zoo_embedder_into_the_folder(tmp_path):
    from gen.training.train import TrainConfig, train

    encoder = PatchEncoder(in_channels=1, patch_size=16, width=8, embedding_dim=tiny.EMBEDDING_WIDTH, projection_dim=8)
    encoder.save_pretrained(tmp_path / "encoder")
    out = train(
        TrainConfig(
            output_dir=str(tmp_path / "run"),
            max_train_steps=1,
            data="digits",
            resolution=8,
            block_out_channels="8,16",
            attention_levels="1",
            layers_per_block=1,
            attention_head_dim=4,
            train_batch_size=8,
            progress=False,
            checkpointing_steps=0,
            condition="embedding",
            embedder=str(tmp_path / "encoder"),
        )
    )
    index = json.loads((out / "model_index.json").read_text())
    assert index["image_encoder"] == ["gen.embedders", "PatchEncoder"] and (out / "image_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    digits = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(load_pipeline(out).embed(digits), encoder.eval().embed_images(digits))


def test_a_composite_pipeline_loads_through_diffusers(tmp_path):
    hybrid = HybridDistilledPipeline(tiny.class_pipeline(seed=0), tiny.class_pipeline(seed=1), base_steps=1, distilled_steps=3)
    hybrid.save_pretrained(tmp_path / "hybrid")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "hybrid", trust_remote_code=True)
    assert isinstance(loaded, HybridDistilledPipeline) and loaded.config.distilled_steps == 3

    def run(pipe):
        return pipe(class_labels=[1, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images

    assert torch.equal(run(loaded), run(hybrid))
