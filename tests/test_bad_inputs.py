"""One table of bad inputs across the public API. Each row asserts the error type, that the message names
the argument at fault, and that nothing was written (the test runs in an empty working folder)."""

import functools
import os
import re

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, LCMScheduler, ScoreSdeVeScheduler

from gen import Denoiser, SamplingHook, cli, sample
from gen import testing as tiny
from gen import zoo
from gen.analysis import frechet_distance
from gen.conditioning import CADS, ConditionEmbeddingPerturbation
from gen.embedders import CallableEmbedder, PatchEncoder, load_embedder
from gen.guidance import SVDD, BestOfN, FKSteering, PosteriorMeanValue
from gen.io import load_safetensors
from gen.pipelines import ClassConditionalPipeline, EmbeddingToImagePipeline, HybridDistilledPipeline, HybridHook, LargeImagePipeline, steer
from gen.pipelines.loading import load_pipeline
from gen.training.models import Architecture, build_backbone
from gen.training.train import TrainConfig, train


@functools.lru_cache(maxsize=None)
def class_pipe():
    pipe = ClassConditionalPipeline(scheduler=DDIMScheduler(num_train_timesteps=100), unet=tiny.tiny_unet(num_class_embeds=11))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=None)
def embedding_pipe():
    torch.manual_seed(0)
    unet = build_backbone(
        "unet",
        "embedding",
        sample_size=16,
        channels=3,
        condition_width=12,
        arch=Architecture(block_out_channels=(8, 16), attention_levels=(1,), layers_per_block=1, attention_head_dim=4, cross_attention_dim=8),
    ).eval()
    pipe = LargeImagePipeline(scheduler=DDIMScheduler(num_train_timesteps=100), unet=unet)
    pipe.set_embedder(CallableEmbedder(lambda im: im.mean(dim=(2, 3)).repeat(1, 4)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ddim_pipe():
    pipe = DDIMPipeline(tiny.tiny_unet(), DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def brightness(images):
    return images.mean(dim=(1, 2, 3))


class NoPoints(SamplingHook):
    pass


TINY_TRAIN = dict(
    data="digits",
    resolution=8,
    block_out_channels="8,16",
    attention_levels="1",
    layers_per_block=1,
    attention_head_dim=4,
    train_batch_size=8,
    max_train_steps=1,
    progress=False,
    checkpointing_steps=0,
    output_dir="run",
)


def run_svdd(reward, **pipe_kwargs):
    return steer(ddim_pipe())(batch_size=2, num_inference_steps=3, eta=pipe_kwargs.pop("eta", 1.0), hooks=[SVDD(PosteriorMeanValue(reward), num_candidates=2)])


def pickle_folder():
    os.makedirs("weights", exist_ok=False)
    with open("weights/model.pt", "wb") as handle:
        handle.write(b"\x80\x04")
    with open("weights/model_index.json", "w") as handle:
        handle.write('{"_class_name": "DDPMPipeline"}')
    return "weights"


CASES = [
    # core
    ("denoiser-unknown-backbone", lambda: Denoiser(torch.nn.Linear(2, 2), DDPMScheduler()), TypeError, "model"),
    ("denoiser-prediction-type", lambda: Denoiser(tiny.tiny_unet(), DDIMScheduler(), prediction_type="flow"), ValueError, "prediction_type"),
    ("denoiser-unknown-scheduler", lambda: Denoiser(tiny.tiny_unet(), ScoreSdeVeScheduler()), ValueError, "scheduler"),
    (
        "sample-latent-channels",
        lambda: sample(Denoiser(tiny.tiny_unet(), DDPMScheduler()), torch.randn(1, 4, 8, 8), num_inference_steps=2),
        ValueError,
        "latents",
    ),
    (
        "sample-steps-zero",
        lambda: sample(Denoiser(tiny.tiny_unet(), DDPMScheduler()), torch.randn(1, 3, 8, 8), num_inference_steps=0),
        ValueError,
        "num_inference_steps",
    ),
    (
        "sample-steps-float",
        lambda: sample(Denoiser(tiny.tiny_unet(), DDPMScheduler()), torch.randn(1, 3, 8, 8), num_inference_steps=2.5),
        ValueError,
        "num_inference_steps",
    ),
    (
        "sample-hook-without-points",
        lambda: sample(Denoiser(tiny.tiny_unet(), DDPMScheduler()), torch.randn(1, 3, 8, 8), num_inference_steps=2, hooks=[NoPoints()]),
        TypeError,
        r"hooks\[0\]",
    ),
    (
        "sample-cond-width",
        lambda: sample(
            Denoiser(tiny.tiny_condition_unet(32), DDIMScheduler()),
            torch.randn(1, 4, 8, 8),
            num_inference_steps=2,
            cond={"encoder_hidden_states": torch.randn(1, 3, 7)},
        ),
        ValueError,
        "cond",
    ),
    (
        "sample-generator-list",
        lambda: sample(Denoiser(tiny.tiny_unet(), DDPMScheduler()), torch.randn(2, 3, 8, 8), num_inference_steps=2, generator=[torch.Generator()]),
        ValueError,
        "generator",
    ),
    ("sample-not-a-denoiser", lambda: sample(tiny.tiny_unet(), torch.randn(1, 3, 8, 8), num_inference_steps=2), TypeError, "denoiser"),
    # steer
    ("steer-unknown-pipeline", lambda: steer(object()), TypeError, "pipe"),
    ("steer-unknown-argument", lambda: steer(ddim_pipe())(batch_size=1, colour="red"), TypeError, "colour"),
    # gen pipelines
    ("class-labels-range", lambda: class_pipe()(class_labels=[3, 10], num_inference_steps=2), ValueError, "class_labels"),
    ("class-labels-float", lambda: class_pipe()(class_labels=[0.5], num_inference_steps=2), ValueError, "class_labels"),
    ("unconditional-without-batch-size", lambda: class_pipe()(num_inference_steps=2), ValueError, "batch_size"),
    ("output-type", lambda: class_pipe()(class_labels=[1], output_type="png"), ValueError, "output_type"),
    ("guidance-scale", lambda: class_pipe()(class_labels=[1], guidance_scale=-1.0), ValueError, "guidance_scale"),
    (
        "embeddings-and-images",
        lambda: EmbeddingToImagePipeline.__call__(embedding_pipe(), embeddings=torch.randn(1, 12), images=torch.rand(1, 3, 16, 16)),
        ValueError,
        "embeddings, images",
    ),
    (
        "embeddings-width",
        lambda: EmbeddingToImagePipeline.__call__(embedding_pipe(), embeddings=torch.randn(2, 5), num_inference_steps=2),
        ValueError,
        "embeddings",
    ),
    (
        "embeddings-per-embedding",
        lambda: EmbeddingToImagePipeline.__call__(embedding_pipe(), embeddings=torch.randn(2, 12), num_images_per_embedding=0),
        ValueError,
        "num_images_per_embedding",
    ),
    ("large-overlap", lambda: embedding_pipe()(embedding_grid=torch.randn(2, 2, 12), overlap=16), ValueError, "overlap"),
    ("large-grid-nan", lambda: embedding_pipe()(embedding_grid=torch.full((2, 2, 12), float("nan"))), ValueError, "embedding_grid"),
    ("large-grid-width", lambda: embedding_pipe()(embedding_grid=torch.randn(2, 2, 7)), ValueError, "embedding_grid"),
    ("large-reference-small", lambda: embedding_pipe()(reference=torch.rand(1, 3, 8, 8)), ValueError, "reference"),
    ("large-embedder-width", lambda: embedding_pipe().set_embedder(CallableEmbedder(lambda im: im.mean(dim=(2, 3)))), ValueError, "embedder"),
    (
        "hybrid-latent-shapes",
        lambda: HybridDistilledPipeline(
            class_pipe(), ClassConditionalPipeline(scheduler=LCMScheduler(), unet=tiny.tiny_unet(sample_size=16, num_class_embeds=11))
        ),
        ValueError,
        "distilled",
    ),
    ("hybrid-base-steps", lambda: HybridHook(Denoiser(tiny.tiny_unet(), LCMScheduler()), base_steps=0), ValueError, "base_steps"),
    (
        "hybrid-k-too-large",
        lambda: steer(ddim_pipe())(batch_size=1, num_inference_steps=3, hooks=[HybridHook(Denoiser(tiny.tiny_unet(seed=1), LCMScheduler()), base_steps=3)]),
        ValueError,
        "base_steps",
    ),
    # guidance
    ("svdd-candidates", lambda: SVDD(PosteriorMeanValue(brightness), num_candidates=0), ValueError, "num_candidates"),
    ("svdd-alpha", lambda: SVDD(PosteriorMeanValue(brightness), alpha=-0.1), ValueError, "alpha"),
    ("svdd-deterministic", lambda: run_svdd(brightness, eta=0.0), ValueError, "scheduler"),
    ("reward-shape", lambda: run_svdd(lambda im: torch.zeros(1)), ValueError, "reward"),
    ("reward-nan", lambda: run_svdd(lambda im: torch.full((len(im),), float("nan"))), ValueError, "reward"),
    ("reward-not-tensor", lambda: run_svdd(lambda im: im.mean().item()), TypeError, "reward"),
    ("reward-not-callable", lambda: PosteriorMeanValue(3.0), TypeError, "reward"),
    ("fk-potential", lambda: FKSteering(brightness, potential="min"), ValueError, "potential"),
    ("fk-ess", lambda: FKSteering(brightness, ess_threshold=2.0), ValueError, "ess_threshold"),
    ("best-of-n", lambda: BestOfN(brightness, n=0), ValueError, "num_particles"),
    # conditioning
    ("cads-window", lambda: CADS(tau1=0.9, tau2=0.5), ValueError, "tau1, tau2"),
    ("cads-noise", lambda: CADS(noise_scale=-1), ValueError, "noise_scale"),
    ("cep-kind", lambda: ConditionEmbeddingPerturbation("laplace"), ValueError, "cep"),
    ("cep-gamma", lambda: ConditionEmbeddingPerturbation("gaussian", -1.0), ValueError, "cep_gamma"),
    # embedders
    ("embedder-type", lambda: load_embedder(123), TypeError, "embedder"),
    ("embedder-images", lambda: PatchEncoder().embed_images(torch.rand(3, 32, 32)), ValueError, "images"),
    ("embedder-nan", lambda: PatchEncoder().embed_images(torch.full((1, 3, 32, 32), float("nan"))), ValueError, "images"),
    # metrics
    ("frechet-too-few", lambda: frechet_distance(torch.randn(1, 4), torch.randn(5, 4)), ValueError, "a"),
    # trainer
    ("train-condition", lambda: train(TrainConfig(**{**TINY_TRAIN, "condition": "colour"})), ValueError, "condition"),
    ("train-backbone", lambda: train(TrainConfig(**{**TINY_TRAIN, "backbone": "mlp"})), ValueError, "backbone"),
    ("train-cep-gamma", lambda: train(TrainConfig(**{**TINY_TRAIN, "cep": "uniform", "cep_gamma": -2.0})), ValueError, "cep_gamma"),
    ("train-missing-data", lambda: train(TrainConfig(**{**TINY_TRAIN, "data": "no-such-folder"})), FileNotFoundError, "data"),
    ("train-empty-data", lambda: (os.makedirs("empty"), train(TrainConfig(**{**TINY_TRAIN, "data": "empty", "output_dir": "empty/run"}))), ValueError, "data"),
    ("train-resume-missing", lambda: train(TrainConfig(**{**TINY_TRAIN, "resume": "no-such-checkpoint"})), ValueError, "resume"),
    ("train-resume-pickle", lambda: train(TrainConfig(**{**TINY_TRAIN, "resume": pickle_folder() + "/model.pt"})), ValueError, "resume"),
    ("train-lora-without-base", lambda: train(TrainConfig(**{**TINY_TRAIN, "lora_rank": 2})), ValueError, "lora_rank"),
    ("train-dropout", lambda: train(TrainConfig(**{**TINY_TRAIN, "condition_dropout": 1.0})), ValueError, "condition_dropout"),
    # zoo and loading
    ("zoo-unknown", lambda: zoo.load("imagenet"), ValueError, "name"),
    ("load-pipeline-pickle", lambda: load_pipeline(pickle_folder()), ValueError, "path: .*pickle"),
    ("refuse-pickle", lambda: load_safetensors(pickle_folder() + "/model.pt"), ValueError, "path"),
    # command line
    ("cli-sample-escape", lambda: cli._sample(cli.parser().parse_args(["sample", "digits", "--out", "out", "--name", "../escape.png"])), ValueError, "name"),
    (
        "cli-sample-absolute",
        lambda: cli._sample(cli.parser().parse_args(["sample", "digits", "--out", "out", "--name", "/tmp/escape.png"])),
        ValueError,
        "name",
    ),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name, call, error, argument", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, error, argument, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as caught:
        call()
    assert re.search(argument, str(caught.value)), str(caught.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not str(p.relative_to(tmp_path)).startswith(("weights", "empty"))]
    assert written == [], written
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
