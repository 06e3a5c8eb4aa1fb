"""With no hooks, gen's loop reproduces the stock diffusers pipelines (same generator, same steps)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

from gen import Denoiser, sample
from gen import testing as tiny
from gen.pipelines import steer


def _ddim():
    pipe = DDIMPipeline(tiny.tiny_unet(), DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


CASES = {
    "ddpm": (tiny.ddpm_pipeline, dict(batch_size=2, num_inference_steps=8)),
    "ddim-eta": (_ddim, dict(batch_size=2, num_inference_steps=8, eta=0.7)),
    "dit-cfg": (tiny.dit_pipeline, dict(class_labels=[1, 7], num_inference_steps=6, guidance_scale=4.0)),
    "dit-dpmsolver": (
        lambda: tiny.dit_pipeline(DPMSolverMultistepScheduler(num_train_timesteps=100)),
        dict(class_labels=[3], num_inference_steps=6, guidance_scale=1.0),
    ),
    "stable-diffusion": (tiny.stable_diffusion_pipeline, dict(prompt=["a cat", "a red dog"], num_inference_steps=5, guidance_scale=6.0)),
    "stable-diffusion-euler-ancestral": (
        lambda: tiny.stable_diffusion_pipeline(EulerAncestralDiscreteScheduler(num_train_timesteps=100)),
        dict(prompt="a cat", num_inference_steps=5, guidance_scale=6.0, guidance_rescale=0.5),
    ),
    "pixart": (
        tiny.pixart_pipeline,
        dict(num_inference_steps=5, guidance_scale=4.5, use_resolution_binning=False, **tiny.pixart_prompt(2)),
    ),
    "sd3": (tiny.sd3_pipeline, dict(num_inference_steps=5, guidance_scale=5.0, **tiny.sd3_prompt(2))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_steer_reproduces_stock_pipeline(name):
    build, kwargs = CASES[name]
    pipe = build()
    stock = pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)
    ours = steer(pipe)(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)
    assert isinstance(ours, type(stock))
    assert np.abs(stock.images - ours.images).max() <= 1e-5
    guided = kwargs.get("guidance_scale", 1.0) > 1.0
    assert ours.nfe == kwargs["num_inference_steps"] * (2 if guided else 1)
    assert ours.reward_calls == 0


def test_sample_alone_matches_ddpm_pipeline():
    pipe = tiny.ddpm_pipeline()
    stock = pipe(batch_size=3, generator=torch.Generator().manual_seed(4), num_inference_steps=7, output_type="pt").images
    g = torch.Generator().manual_seed(4)
    x = randn_tensor((3, 3, 8, 8), generator=g)
    out = sample(Denoiser(pipe.unet, pipe.scheduler), x, num_inference_steps=7, generator=g)
    images = (out.samples / 2 + 0.5).clamp(0, 1)
    assert torch.equal(images, stock)
    assert out.nfe == 7


def test_callback_on_step_end_can_replace_latents():
    pipe = tiny.stable_diffusion_pipeline()
    seen = []

    def zero_latents(p, i, t, kwargs):
        seen.append(i)
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 3 else kwargs

    kwargs = dict(prompt="a cat", num_inference_steps=4, guidance_scale=1.0, output_type="latent", callback_on_step_end=zero_latents)
    stock = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    ours = steer(pipe)(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert seen == [0, 1, 2, 3, 0, 1, 2, 3]
    assert torch.equal(stock, ours) and ours.abs().max() == 0
