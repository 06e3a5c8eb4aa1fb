"""Value guidance as an effect, on the zoo digits model: same seeds, guided vs plain."""

import pytest
import torch
from diffusers import DDIMScheduler

from gen import zoo
from gen.analysis.metrics import FeatureSpace
from gen.guidance import SVDD, LearnedValue, PosteriorMeanValue, classifier_log_prob, jpeg_compressibility

TARGET = 3


@pytest.fixture(scope="module")
def pipe():
    pipe = zoo.load("digits")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("digits-classifier")


def sample(pipe, hooks=(), labels=None, n=16, seed=0):
    return pipe(class_labels=labels, batch_size=n if labels is None else None, num_inference_steps=20, eta=1.0, hooks=list(hooks),
                generator=torch.Generator().manual_seed(seed), output_type="pt")


@pytest.mark.parametrize("labels", [None, [5] * 16], ids=["unconditional", "wrong-class"])
def test_svdd_pm_raises_reward_and_target_rate(pipe, classifier, labels):
    reward = classifier_log_prob(classifier, TARGET)
    plain = sample(pipe, labels=labels)
    guided = sample(pipe, [SVDD(PosteriorMeanValue(reward), num_candidates=4)], labels=labels)
    space = FeatureSpace(classifier)
    rate = lambda images: (space.predict(images) == TARGET).float().mean().item()
    assert reward(guided.images).mean() > reward(plain.images).mean() + 1.0
    assert rate(guided.images) > rate(plain.images) + 0.3
    assert guided.nfe == 1 + 4 * 19 and guided.reward_calls == 4 * 20


def test_one_candidate_at_alpha_zero_is_plain_sampling(pipe, classifier):
    plain = sample(pipe, n=8)
    same = sample(pipe, [SVDD(PosteriorMeanValue(classifier_log_prob(classifier, TARGET)), num_candidates=1, alpha=0.0)], n=8)
    assert torch.equal(plain.images, same.images)


def test_svdd_mc_raises_target_rate_at_plain_cost(pipe, classifier):
    value = LearnedValue(zoo.load("digits-value"))
    plain = sample(pipe, n=24)
    guided = sample(pipe, [SVDD(value, num_candidates=16)], n=24)
    space = FeatureSpace(classifier)
    rate = lambda images: (space.predict(images) == TARGET).float().mean().item()
    assert rate(guided.images) > rate(plain.images) + 0.15
    assert guided.nfe == plain.nfe == 20


def test_svdd_raises_jpeg_compressibility(pipe):
    reward = jpeg_compressibility()
    labels = [8] * 16
    plain = sample(pipe, labels=labels)
    guided = sample(pipe, [SVDD(PosteriorMeanValue(reward), num_candidates=4)], labels=labels)
    assert reward(guided.images).mean() > reward(plain.images).mean()
