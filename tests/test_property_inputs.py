"""Property-based bad input over the public API (hypothesis): random types, NaN and infinity, negative and
zero sizes, wrong shapes and dtypes, empty containers, wrong-length lists. Every call either returns a
finite result of the right shape, or raises one of gen's own errors (gen.errors.GenError) whose message
starts with the name of an argument; never a raw torch/numpy/Python error, never a NaN output.
"""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen import Denoiser, sample
from gen import testing as tiny
from gen.conditioning import CADS, ConditionEmbeddingPerturbation
from gen.errors import GenError
from gen.guidance import SVDD, BestOfN, FKSteering, PosteriorMeanValue, classifier_log_prob, jpeg_compressibility
from gen.pipelines import LargeImagePipeline

NAMED = re.compile(r"^[A-Za-z_][\w\[\]'\", ]*: ")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

junk_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(10**6, 10**12),
    st.integers(-(10**9), -10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.just([]),
    st.just({}),
    st.just(()),
)
junk_list = st.one_of(st.lists(st.integers(-3, 15), max_size=5), st.lists(junk_scalar, max_size=3), st.just([[1, 2], [3]]))
junk_tensor = st.one_of(
    st.just(torch.empty(0)),
    st.just(torch.full((2, 3), float("nan"))),
    st.just(torch.ones(2, 3, dtype=torch.int64)),
    st.just(torch.rand(2, 3, 8)),
    st.just(torch.rand(1, 3, 16, 16) * 300),
    st.just(torch.rand(3, 3, 16, 16)),
    st.just(torch.rand(1, 1, 40, 40)),
    st.just(np.zeros((4, 4), dtype=np.uint8)),
    st.just(np.full((8, 8, 3), np.inf)),
    st.just(torch.rand(1, 3, 16, 16, dtype=torch.float64)),
)
junk = st.one_of(junk_scalar, junk_list, junk_tensor)


def check(call):
    """Run call: a finite result, or a GenError naming an argument."""
    try:
        result = call()
    except GenError as err:
        assert NAMED.match(str(err)), f"gen error without an argument name: {err!r}"
        return None
    except Exception as err:  # noqa: BLE001  (any other exception is the defect under test)
        pytest.fail(f"raw {type(err).__name__}: {err}")
    images = getattr(result, "images", None)
    if isinstance(images, torch.Tensor):
        assert torch.isfinite(images.float()).all(), "NaN or infinite output"
    return result


@pytest.fixture(scope="module")
def class_pipe():
    return tiny.class_pipeline()


@pytest.fixture(scope="module")
def large_pipe():
    return tiny.embedding_pipeline(LargeImagePipeline)


@given(
    name=st.sampled_from(
        ["class_labels", "batch_size", "guidance_scale", "num_inference_steps", "height", "width", "eta", "output_type", "generator", "latents"]
    ),
    value=junk,
)
@SETTINGS
def test_class_conditional_pipeline(class_pipe, name, value):
    kwargs = dict(class_labels=[1, 2], num_inference_steps=2, output_type="pt")
    if name == "generator" and isinstance(value, list):
        value = [torch.Generator().manual_seed(0) for _ in value]
    kwargs[name] = value
    if name == "batch_size":
        kwargs["class_labels"] = None
    result = check(lambda: class_pipe(**kwargs))
    if result is not None and name not in ("output_type",):
        assert result.images.shape[1:] == (3, *result.images.shape[2:]) and result.images.shape[0] >= 1


@given(
    name=st.sampled_from(
        ["reference", "embedding_grid", "overlap", "height", "width", "tile_batch_size", "num_images", "patch_size", "interpolation", "blend"]
    ),
    value=junk,
)
@SETTINGS
def test_large_image_pipeline(large_pipe, name, value):
    kwargs = dict(embedding_grid=torch.randn(2, 2, tiny.EMBEDDING_WIDTH), overlap=4, num_inference_steps=1, output_type="pt")
    if name == "reference":
        kwargs.pop("embedding_grid")
    kwargs[name] = value
    check(lambda: large_pipe(**kwargs))


@given(name=st.sampled_from(["latents", "num_inference_steps", "guidance_scale", "eta", "generator", "cond"]), value=junk)
@SETTINGS
def test_sample(name, value):
    from diffusers import DDIMScheduler

    den = Denoiser(tiny.tiny_unet(num_class_embeds=11), DDIMScheduler(num_train_timesteps=100))
    kwargs = dict(
        latents=torch.randn(2, 3, 8, 8), num_inference_steps=2, cond={"class_labels": torch.tensor([1, 2])}, uncond={"class_labels": torch.tensor([10, 10])}
    )
    if name == "generator" and isinstance(value, list):
        value = [torch.Generator().manual_seed(0) for _ in value]
    kwargs[name] = value
    result = check(lambda: sample(den, **kwargs))
    if result is not None:
        assert result.samples.shape == (2, 3, 8, 8) and torch.isfinite(result.samples).all()


HOOKS = {
    "SVDD": lambda v: SVDD(PosteriorMeanValue(lambda im: im.mean(dim=(1, 2, 3))), num_candidates=v),
    "SVDD alpha": lambda v: SVDD(PosteriorMeanValue(lambda im: im.mean(dim=(1, 2, 3))), alpha=v),
    "SVDD max_batch": lambda v: SVDD(PosteriorMeanValue(lambda im: im.mean(dim=(1, 2, 3))), max_batch=v),
    "BestOfN": lambda v: BestOfN(lambda im: im.mean(dim=(1, 2, 3)), n=v),
    "FK particles": lambda v: FKSteering(lambda im: im.mean(dim=(1, 2, 3)), num_particles=v),
    "FK lmbda": lambda v: FKSteering(lambda im: im.mean(dim=(1, 2, 3)), lmbda=v),
    "FK resample_every": lambda v: FKSteering(lambda im: im.mean(dim=(1, 2, 3)), resample_every=v),
    "FK window": lambda v: FKSteering(lambda im: im.mean(dim=(1, 2, 3)), resample_window=v),
    "FK ess": lambda v: FKSteering(lambda im: im.mean(dim=(1, 2, 3)), ess_threshold=v),
    "CADS noise": lambda v: CADS(noise_scale=v),
    "CADS tau1": lambda v: CADS(tau1=v),
    "CADS mixing": lambda v: CADS(mixing_factor=v),
    "CEP gamma": lambda v: ConditionEmbeddingPerturbation("gaussian", v),
    "CEP kind": lambda v: ConditionEmbeddingPerturbation(v, 1.0),
    "PosteriorMeanValue": lambda v: PosteriorMeanValue(v),
    "jpeg quality": lambda v: jpeg_compressibility(v),
}


@given(name=st.sampled_from(list(HOOKS)), value=junk)
@SETTINGS
def test_hook_and_reward_constructors(name, value):
    check(lambda: HOOKS[name](value))


@given(target=junk)
@SETTINGS
def test_classifier_reward_targets(target):
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    reward = check(lambda: classifier_log_prob(classifier, target))
    if reward is not None:
        values = check(lambda: reward(torch.rand(2, 3, 8, 8)))
        if values is not None:
            assert values.shape == (2,) and torch.isfinite(values).all()


@given(images=junk)
@SETTINGS
def test_embedding_pipeline_images(images):
    pipe = tiny.embedding_pipeline()
    result = check(lambda: pipe(images=images, num_inference_steps=1, output_type="pt"))
    if result is not None:
        assert result.images.shape[1:] == (3, 16, 16)


@given(value=junk)
@SETTINGS
def test_loaders(value):
    from gen.embedders import load_embedder
    from gen.pipelines.loading import load_pipeline

    if isinstance(value, str) or value is None or isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        check(lambda: load_pipeline(value if value is not None else ""))
    check(lambda: load_embedder(value))
