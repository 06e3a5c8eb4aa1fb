"""Diversity distillation: the handover hook, its refusals, DT-visualization, LoRA control transfer."""

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, LCMScheduler

from gen import Denoiser, SamplingHook
from gen import testing as tiny
from gen.analysis import DTVisualizer
from gen.pipelines import HybridHook, steer


class Timesteps(SamplingHook):
    def __init__(self):
        self.seen = []

    def observe(self, state):
        self.seen.append(int(state.step.timestep))


def _base():
    pipe = DDIMPipeline(tiny.tiny_unet(), DDIMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_handover_through_steer_for_a_pair_of_diffusers_pipelines():
    base = _base()
    fast = Denoiser(tiny.tiny_unet(seed=1), LCMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", original_inference_steps=50))
    seen = Timesteps()
    out = steer(base)(
        batch_size=2,
        num_inference_steps=50,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
        hooks=[HybridHook(fast, base_steps=2, distilled_steps=4), seen],
    )
    # base: 980, 960; the state then sits at the level of t=940, which the LCM continues from on its own
    # distillation grid (939), then its 4-step grid below that
    assert seen.seen == [980, 960, 939, 759, 499, 259]
    assert out.nfe == len(seen.seen)
    assert out.images.shape == (2, 3, 8, 8)


def test_a_noisier_state_than_the_incoming_schedule_knows_starts_at_its_top():
    base = _base()  # DDIM's default betas reach a lower log-SNR than LCM's scaled-linear default
    fast = Denoiser(tiny.tiny_unet(seed=1), LCMScheduler(num_train_timesteps=1000, original_inference_steps=50))
    seen = Timesteps()
    steer(base)(batch_size=1, num_inference_steps=50, output_type="pt", hooks=[HybridHook(fast, base_steps=2, distilled_steps=4), seen])
    assert seen.seen == [980, 960, 999, 759, 499, 259]


def test_handover_to_a_ddpm_scheduler_with_custom_timesteps():
    base = _base()
    other = Denoiser(tiny.tiny_unet(seed=1), DDPMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear"))
    seen = Timesteps()
    steer(base)(batch_size=1, num_inference_steps=10, output_type="pt", hooks=[HybridHook(other, base_steps=3, distilled_steps=5), seen])
    # after three base steps the state is at t=600, which is on the DDPM grid (800, 600, 400, 200, 0)
    assert seen.seen == [900, 800, 700, 600, 400, 200, 0]


@pytest.mark.parametrize(
    "hook, pattern",
    [
        (lambda: HybridHook(Denoiser(tiny.tiny_unet(channels=4), LCMScheduler()), base_steps=1), r"distilled: latent channels differ"),
        (lambda: HybridHook(Denoiser(tiny.tiny_unet(sample_size=16), LCMScheduler()), base_steps=1), r"distilled: sample sizes differ"),
        (
            lambda: HybridHook(Denoiser(tiny.tiny_unet(seed=1), LCMScheduler()), base_steps=10),
            r"base_steps: 10 must be smaller than the base schedule's 10 steps",
        ),
        (
            lambda: HybridHook(Denoiser(tiny.tiny_unet(seed=1), LCMScheduler(original_inference_steps=50)), base_steps=1, distilled_steps=2000),
            r"distilled_steps: the distilled scheduler cannot take 2000 steps",
        ),
    ],
)
def test_bad_hybrid_setups_are_refused_before_sampling(hook, pattern, count_calls):
    base = _base()
    calls = count_calls(base.unet)
    with pytest.raises(ValueError, match=pattern):
        steer(base)(batch_size=1, num_inference_steps=10, hooks=[hook()])
    assert calls.calls == 0


def test_a_scheduler_without_custom_timesteps_must_meet_the_handover_on_its_grid(count_calls):
    base = _base()
    calls = count_calls(base.unet)
    ddim = Denoiser(tiny.tiny_unet(seed=1), DDIMScheduler(num_train_timesteps=1000))
    with pytest.raises(ValueError, match=r"DDIMScheduler takes no custom timesteps"):
        steer(base)(batch_size=1, num_inference_steps=7, hooks=[HybridHook(ddim, base_steps=1, distilled_steps=4)])
    assert calls.calls == 0


def test_dt_visualizer_records_every_step_and_draws_a_strip():
    pipe = DDPMPipeline(tiny.tiny_unet(), DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    viz = DTVisualizer(max_samples=3)
    steer(pipe)(batch_size=5, num_inference_steps=6, hooks=[viz])
    frames = viz.images()
    assert frames.shape == (6, 3, 3, 8, 8) and 0 <= frames.min() and frames.max() <= 1
    strip = viz.strip(gap=1)
    assert strip.size == (6 * 9 - 1, 3 * 9 - 1)
    assert len(viz.change_per_step()) == 5
