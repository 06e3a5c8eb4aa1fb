"""Gradient guidance: a differentiable reward's gradient through the x0 estimate (DPS-style) and classifier
guidance (a classifier on x_t, or PPAP-style experts by noise level) raise log p(target) on the digits model over
several seeds, and lower it when the sign is flipped; counts are honest; every parameterisation is served."""

import pytest
import torch

import gen.zoo as zoo
from gen import Denoiser, sample
from gen import testing as tiny
from gen.guidance import ClassifierGuidance, RewardGradientGuidance


@pytest.fixture(scope="module")
def models():
    return zoo.load("digits"), zoo.load("digits-classifier")


def _log_p3(classifier, images):
    with torch.no_grad():
        return classifier.log_probs(images.float())[:, 3].mean()


def _runs(pipe, hooks, seed):
    return pipe(class_labels=None, batch_size=8, num_inference_steps=20, output_type="pt", generator=torch.Generator().manual_seed(seed), hooks=hooks)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reward gradient", "classifier", "experts"])
def test_gradient_guidance_raises_the_target_and_the_flipped_sign_lowers_it(models, kind):
    pipe, classifier = models
    on_x_t = lambda x, t: classifier.log_probs((x / 2 + 0.5).clamp(0, 1))  # a classifier read on x_t (not trained for noise)

    def hook(scale):
        if kind == "reward gradient":
            return RewardGradientGuidance(lambda images: classifier.log_probs(images)[:, 3], scale=scale)
        experts = on_x_t if kind == "classifier" else [(0, 500, on_x_t), (500, 1000, on_x_t)]
        return ClassifierGuidance(experts, 3, scale=2 * scale)

    for seed in (0, 1, 2):
        plain = _log_p3(classifier, _runs(pipe, [], seed).images)
        guided = _runs(pipe, [hook(1.0)], seed)
        flipped = _log_p3(classifier, _runs(pipe, [hook(-1.0)], seed).images)
        assert _log_p3(classifier, guided.images) > plain + 1.0 and flipped < plain, (kind, seed)
        assert guided.reward_calls >= 19, "every gradient is counted"
        if kind == "reward gradient":
            assert guided.nfe == 20 + 19, "the gradient pass is an evaluation of its own"


def test_scale_zero_is_plain_sampling_and_every_parameterisation_is_served():
    pipe = tiny.class_pipeline()
    labels = torch.tensor([1, 2])
    args = dict(num_inference_steps=4, cond={"class_labels": labels})
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    on_x_t = lambda v, t: v.flatten(1)[:, :10] * 3.0
    den = Denoiser(pipe.unet, pipe.scheduler)
    plain = sample(den, x, **args)
    assert torch.equal(sample(den, x, hooks=[ClassifierGuidance(on_x_t, 4, scale=0.0)], **args).samples, plain.samples)
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    for scheduler in (
        DDIMScheduler(num_train_timesteps=100, prediction_type="v_prediction"),
        DDIMScheduler(num_train_timesteps=100, prediction_type="sample"),
        FlowMatchEulerDiscreteScheduler(),
    ):
        den = Denoiser(pipe.unet, scheduler)
        base = sample(den, x, **args).samples
        guided = sample(den, x, hooks=[ClassifierGuidance(on_x_t, 4, scale=1.0)], **args)
        assert torch.isfinite(guided.samples).all() and not torch.equal(guided.samples, base), den.prediction_type
        assert guided.reward_calls > 0


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="classifier: expected a callable"):
        ClassifierGuidance([(0, 1)], 3)
    with pytest.raises(TypeError, match="reward: expected a differentiable callable"):
        RewardGradientGuidance(3.0)
    pipe = tiny.class_pipeline()
    x = torch.randn(1, 3, 8, 8)
    den = Denoiser(pipe.unet, pipe.scheduler)
    with pytest.raises(ValueError, match="no expert covers timestep"):
        sample(den, x, num_inference_steps=2, cond={"class_labels": torch.tensor([1])}, hooks=[ClassifierGuidance([(0, 10, lambda v, t: v.flatten(1))], 1)])
    with pytest.raises(ValueError, match="needs a differentiable reward"):
        sample(
            den,
            x,
            num_inference_steps=3,
            cond={"class_labels": torch.tensor([1])},
            decode=lambda v: v,
            hooks=[RewardGradientGuidance(lambda images: images.mean(dim=(1, 2, 3)).detach())],
        )
