"""The four hook points, written here as a user would, through steer() for a UNet and a DiT pipeline."""

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from gen import Denoiser, SamplingHook
from gen.core import prediction, schedulers
from gen import testing as tiny
from gen.pipelines import steer
from diffusers.utils.torch_utils import randn_tensor


class RecordX0(SamplingHook):
    def __init__(self):
        self.steps, self.x0 = [], []

    def observe(self, state):
        self.steps.append(state.step.index)
        self.x0.append(state.x0.clone())


class SwitchDenoiser(SamplingHook):
    def __init__(self, other: Denoiser, at: int):
        self.other, self.at = other, at

    def denoiser(self, step, current):
        return self.other if step.index >= self.at else current


class HandWrittenDDIM(SamplingHook):
    """Replaces the step with a deterministic DDIM update written from x0 and eps."""

    def __init__(self):
        self.calls = 0

    def transition(self, state, ctx):
        self.calls += 1
        scheduler = ctx.scheduler
        t = int(state.step.timestep)
        prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        abar_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        level = schedulers.noise_level(scheduler, t)
        eps = (state.x - level.alpha.float() * state.x0) / level.sigma.float()
        x_prev = abar_prev.sqrt() * state.x0 + (1 - abar_prev).sqrt() * eps
        return ctx.next_state(x_prev)


def _images(pipe, x):
    """What the pipeline makes of final latents x."""
    if hasattr(pipe, "vae"):
        x = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    return (x / 2 + 0.5).clamp(0, 1)


def _unet_pipe():
    pipe = DDIMPipeline(tiny.tiny_unet(), DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dit_pipe():
    return tiny.dit_pipeline(DDIMScheduler(num_train_timesteps=100, clip_sample=False))


PIPES = {
    "unet": (_unet_pipe, dict(batch_size=2), lambda p: p.unet, lambda seed: tiny.tiny_unet(seed=seed)),
    "dit": (_dit_pipe, dict(class_labels=[1, 2], guidance_scale=1.0), lambda p: p.transformer, lambda seed: tiny.tiny_dit(seed=seed)),
}


@pytest.mark.parametrize("kind", list(PIPES))
def test_observe_records_every_x0_and_last_equals_output(kind):
    build, kwargs, _, _ = PIPES[kind]
    pipe = build()
    recorder = RecordX0()
    out = steer(pipe)(num_inference_steps=6, output_type="pt", hooks=[recorder], generator=torch.Generator().manual_seed(0), **kwargs)
    assert recorder.steps == list(range(6))
    # DDIM's final step lands on alpha_bar = 1, so the last x0 estimate *is* the sample.
    assert torch.allclose(_images(pipe, recorder.x0[-1]), out.images, atol=1e-5)
    assert not torch.allclose(recorder.x0[0], recorder.x0[-1], atol=1e-3)


@pytest.mark.parametrize("kind", list(PIPES))
def test_denoiser_hook_switches_backbone_halfway(kind):
    build, kwargs, backbone, other_backbone = PIPES[kind]
    pipe = build()
    other = Denoiser(other_backbone(seed=1), pipe.scheduler)
    args = dict(num_inference_steps=6, output_type="pt", **kwargs)
    plain = steer(pipe)(generator=torch.Generator().manual_seed(0), **args).images
    switched = steer(pipe)(generator=torch.Generator().manual_seed(0), hooks=[SwitchDenoiser(other, at=3)], **args).images

    # Reference: the same run written by hand, model A for steps 0-2 and model B for 3-5.
    g = torch.Generator().manual_seed(0)
    first = Denoiser(backbone(pipe), pipe.scheduler)
    x = randn_tensor((2, first.in_channels, 8, 8), generator=g)
    cond = {"class_labels": torch.tensor([1, 2])} if kind == "dit" else None
    pipe.scheduler.set_timesteps(6)
    for i, t in enumerate(pipe.scheduler.timesteps):
        den = first if i < 3 else other
        x = pipe.scheduler.step(den(x, t, cond=cond).output, t, x, generator=g).prev_sample
    assert torch.allclose(switched, _images(pipe, x), atol=1e-5)
    assert not torch.allclose(switched, plain, atol=1e-3)


@pytest.mark.parametrize("kind", list(PIPES))
def test_transition_hook_replaces_the_step(kind):
    build, kwargs, _, _ = PIPES[kind]
    pipe = build()
    args = dict(num_inference_steps=5, output_type="pt", **kwargs)
    stock = steer(pipe)(generator=torch.Generator().manual_seed(0), **args)
    hook = HandWrittenDDIM()
    ours = steer(pipe)(generator=torch.Generator().manual_seed(0), hooks=[hook], **args)
    assert hook.calls == 5
    assert torch.allclose(stock.images, ours.images, atol=1e-5)
    assert ours.nfe == stock.nfe == 5


def test_condition_hook_changes_the_condition_per_step():
    pipe = _dit_pipe()

    class RelabelLateSteps(SamplingHook):
        def __init__(self):
            self.seen = []

        def condition(self, step, cond):
            self.seen.append(step.index)
            return {"class_labels": torch.full_like(cond["class_labels"], 9)} if step.index >= 2 else cond

    args = dict(class_labels=[1, 2], guidance_scale=1.0, num_inference_steps=4, output_type="pt")
    hook = RelabelLateSteps()
    relabelled = steer(pipe)(generator=torch.Generator().manual_seed(0), hooks=[hook], **args).images
    plain = steer(pipe)(generator=torch.Generator().manual_seed(0), **args).images
    assert hook.seen == [0, 1, 2, 3]
    assert not torch.allclose(relabelled, plain)


def test_hooks_compose_in_order():
    log = []

    class Named(SamplingHook):
        def __init__(self, name):
            self.name = name

        def transition(self, state, ctx):
            log.append(f"{self.name}>")
            new = ctx.proceed(state)
            log.append(f"<{self.name}")
            return new

    pipe = tiny.ddpm_pipeline()
    steer(pipe)(num_inference_steps=1, hooks=[Named("a"), Named("b")], output_type="np")
    assert log == ["a>", "b>", "<b", "<a"]
