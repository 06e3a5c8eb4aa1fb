"""Bad input to the core is refused with an error naming the argument and the fix, before any model call."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

from gen import Denoiser, SamplingHook, sample
from gen import testing as tiny
from gen.pipelines import steer


class NoPoints(SamplingHook):
    pass


@pytest.fixture
def unet():
    return tiny.tiny_unet()


def test_unknown_backbone_is_a_type_error():
    with pytest.raises(TypeError, match=r"model: .*UNet2DModel.*got Linear"):
        Denoiser(torch.nn.Linear(2, 2), DDPMScheduler())


def test_prediction_type_the_scheduler_cannot_serve(unet):
    with pytest.raises(ValueError, match=r"prediction_type: .*'v_prediction'.*from_config"):
        Denoiser(unet, DDIMScheduler(), prediction_type="v_prediction")
    with pytest.raises(ValueError, match=r"prediction_type: .*'epsilon'.*FlowMatchEulerDiscreteScheduler"):
        Denoiser(unet, FlowMatchEulerDiscreteScheduler(), prediction_type="epsilon")


@pytest.mark.parametrize(
    "latents, kwargs, pattern",
    [
        (torch.randn(2, 4, 8, 8), {}, r"latents: the backbone takes 3 channels"),
        (torch.randn(2, 3, 7, 8), {}, r"latents: height and width must be multiples of 2"),
        (torch.randn(3, 8, 8), {}, r"latents: expected a \(batch, channels, height, width\)"),
        (torch.full((1, 3, 8, 8), float("nan")), {}, r"latents: contains NaN"),
        (torch.randn(2, 3, 8, 8), {"num_inference_steps": 0}, r"num_inference_steps: must be a positive integer"),
        (torch.randn(2, 3, 8, 8), {"num_inference_steps": -3}, r"num_inference_steps"),
        (torch.randn(2, 3, 8, 8), {"num_inference_steps": 4, "hooks": [NoPoints()]}, r"hooks\[0\]: NoPoints implements none"),
        (torch.randn(2, 3, 8, 8), {"num_inference_steps": 4, "hooks": [object()]}, r"hooks\[0\]"),
        (torch.randn(2, 3, 8, 8), {"num_inference_steps": 4, "cond": {"encoder_hidden_states": torch.randn(2, 4, 8)}}, r"cond: UNet2DModel takes"),
        (torch.randn(2, 3, 8, 8), {"num_inference_steps": 4, "generator": [torch.Generator()]}, r"generator: got a list of 1"),
    ],
)
def test_sample_refuses_bad_input_before_any_model_call(unet, count_calls, latents, kwargs, pattern):
    calls = count_calls(unet)
    kwargs.setdefault("num_inference_steps", 4)
    with pytest.raises((ValueError, TypeError), match=pattern):
        sample(Denoiser(unet, DDPMScheduler(num_train_timesteps=100)), latents, **kwargs)
    assert calls.calls == 0


def test_condition_of_the_wrong_width_is_refused(count_calls):
    model = tiny.tiny_condition_unet(cross_attention_dim=32)
    calls = count_calls(model)
    den = Denoiser(model, DDIMScheduler(num_train_timesteps=100))
    with pytest.raises(ValueError, match=r"cond\['encoder_hidden_states'\]: width 16 does not match the backbone's 32"):
        sample(den, torch.randn(1, 4, 8, 8), num_inference_steps=2, cond={"encoder_hidden_states": torch.randn(1, 5, 16)})
    with pytest.raises(ValueError, match=r"cond: UNet2DConditionModel needs \['encoder_hidden_states'\]"):
        sample(den, torch.randn(1, 4, 8, 8), num_inference_steps=2)
    with pytest.raises(ValueError, match=r"uncond\['encoder_hidden_states'\]: batch 2 does not match"):
        sample(den, torch.randn(1, 4, 8, 8), num_inference_steps=2, cond={"encoder_hidden_states": torch.randn(1, 5, 32)},
               uncond={"encoder_hidden_states": torch.randn(2, 5, 32)}, guidance_scale=3.0)
    assert calls.calls == 0


def test_class_labels_out_of_range(count_calls):
    model = tiny.tiny_unet(num_class_embeds=11)
    calls = count_calls(model)
    with pytest.raises(ValueError, match=r"cond\['class_labels'\]: labels must lie in \[0, 11\)"):
        sample(Denoiser(model, DDPMScheduler()), torch.randn(2, 3, 8, 8), num_inference_steps=2, cond={"class_labels": torch.tensor([3, 11])})
    assert calls.calls == 0


def test_steer_refuses_unknown_pipeline_and_bad_hooks(count_calls):
    with pytest.raises(TypeError, match=r"pipe: steer\(\) supports"):
        steer(object())
    pipe = tiny.ddpm_pipeline()
    calls = count_calls(pipe.unet)
    with pytest.raises(TypeError, match=r"hooks\[1\]"):
        steer(pipe)(num_inference_steps=2, hooks=[SamplingHook.__new__(type("Obs", (SamplingHook,), {"observe": lambda s, st: None})), NoPoints()])
    with pytest.raises(TypeError, match=r"DDPMPipeline.__call__: got an unexpected keyword argument"):
        steer(pipe)(num_inference_steps=2, not_an_argument=1)
    assert calls.calls == 0


def test_sample_needs_a_denoiser():
    with pytest.raises(TypeError, match=r"denoiser: expected a gen.Denoiser.*Denoiser\(model, scheduler\)"):
        sample(tiny.tiny_unet(), torch.randn(1, 3, 8, 8), num_inference_steps=2)
