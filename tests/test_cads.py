"""CADS: the annealing schedule, the rescaling, and where it acts (tensor conditions and class tables)."""

import torch
from diffusers import DDIMScheduler

from gen import Step
from gen import testing as tiny
from gen.conditioning import CADS
from gen.pipelines import ClassConditionalPipeline, steer


def step(index, total=10):
    return Step(index=index, timestep=torch.tensor(0), num_steps=total)


def test_gamma_follows_the_piecewise_linear_schedule():
    cads = CADS(tau1=0.6, tau2=0.9)
    # t = 1 - index / steps: 1.0, 0.9 -> 0 (pure noise condition); 0.6 and below -> 1 (clean)
    assert cads.gamma(step(0)) == 0.0 and cads.gamma(step(1)) == 0.0
    assert abs(cads.gamma(step(2)) - (0.9 - 0.8) / 0.3) < 1e-9
    assert cads.gamma(step(4)) == 1.0 and cads.gamma(step(9)) == 1.0


def test_annealed_condition_keeps_mean_and_std_and_is_clean_late():
    cads = CADS(noise_scale=0.5, mixing_factor=1.0, seed=0)
    y = torch.randn(4, 7, 32) * 3 + 1
    noisy = cads.condition(step(0), {"encoder_hidden_states": y})["encoder_hidden_states"]
    assert not torch.allclose(noisy, y)
    assert torch.allclose(noisy.mean(dim=(1, 2)), y.mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(noisy.std(dim=(1, 2)), y.std(dim=(1, 2)), atol=1e-4)
    assert torch.equal(cads.condition(step(8), {"encoder_hidden_states": y})["encoder_hidden_states"], y)
    labels = {"class_labels": torch.tensor([1, 2])}
    assert cads.condition(step(0), labels) == labels  # integer labels are left to the denoiser point


def test_without_rescaling_the_noise_scale_is_s_at_gamma_zero():
    cads = CADS(noise_scale=0.25, rescale=False, seed=1)
    y = torch.zeros(2000, 16)
    out = cads.anneal(y, 0.0)
    assert abs(out.std().item() - 0.25) < 0.01


def test_cads_on_class_tables_changes_early_steps_only_for_conditional_rows():
    pipe = ClassConditionalPipeline(scheduler=DDIMScheduler(num_train_timesteps=100), unet=tiny.tiny_unet(num_class_embeds=11))
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[1, 2, 3], guidance_scale=3.0, num_inference_steps=6, output_type="pt")
    plain = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    annealed = pipe(generator=torch.Generator().manual_seed(0), hooks=[CADS(seed=0)], **kwargs).images
    again = pipe(generator=torch.Generator().manual_seed(0), hooks=[CADS(seed=0)], **kwargs).images
    assert not torch.allclose(plain, annealed) and torch.equal(annealed, again)
    null = pipe(class_labels=None, batch_size=3, num_inference_steps=6, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    null_cads = pipe(
        class_labels=None, batch_size=3, num_inference_steps=6, output_type="pt", generator=torch.Generator().manual_seed(0), hooks=[CADS(seed=0)]
    ).images
    assert torch.equal(null, null_cads)  # the unconditional (null) rows are never annealed


def test_cads_through_steer_on_text_conditions():
    pipe = tiny.stable_diffusion_pipeline()
    kwargs = dict(prompt=["a cat", "a dog"], num_inference_steps=5, guidance_scale=5.0, output_type="latent")
    plain = steer(pipe)(generator=torch.Generator().manual_seed(0), **kwargs).images
    annealed = steer(pipe)(generator=torch.Generator().manual_seed(0), hooks=[CADS(noise_scale=0.5)], **kwargs).images
    assert not torch.allclose(plain, annealed)
