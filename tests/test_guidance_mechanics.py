"""SVDD, best-of-N and FK steering on tiny random models: exactness, honest counts, refusals."""

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, FlowMatchEulerDiscreteScheduler

from gen import testing as tiny
from gen.guidance import SVDD, BestOfN, FKSteering, LearnedValue, PosteriorMeanValue, RewardError
from gen.pipelines import steer


def brightness(images):
    return images.mean(dim=(1, 2, 3))


def _ddim(eta_pipe=True):
    pipe = DDIMPipeline(tiny.tiny_unet(), DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, hooks=(), steps=6, eta=1.0, batch=3, seed=0, **kw):
    return steer(pipe)(
        batch_size=batch, num_inference_steps=steps, eta=eta, output_type="pt", hooks=list(hooks), generator=torch.Generator().manual_seed(seed), **kw
    )


def test_one_candidate_argmax_is_plain_sampling_exactly():
    pipe = _ddim()
    plain = run(pipe)
    guided = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=1, alpha=0.0)])
    assert torch.equal(plain.images, guided.images)
    assert guided.nfe == plain.nfe == 6
    ddpm = tiny.ddpm_pipeline()
    a = steer(ddpm)(batch_size=2, num_inference_steps=5, output_type="pt", generator=torch.Generator().manual_seed(1))
    b = steer(ddpm)(
        batch_size=2,
        num_inference_steps=5,
        output_type="pt",
        generator=torch.Generator().manual_seed(1),
        hooks=[SVDD(PosteriorMeanValue(brightness), num_candidates=1)],
    )
    assert torch.equal(a.images, b.images)


def test_svdd_pm_costs_m_evaluations_per_step_and_counts_rewards():
    pipe = _ddim()
    out = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=4)], steps=6)
    assert out.nfe == 1 + 4 * 5  # the chosen candidate's evaluation is reused as the next step's output
    # DDIM's last step draws no noise: its four candidates are one point, taken unscored
    assert out.reward_calls == 4 * 5 and out.decodes == 4 * 5


def test_svdd_raises_the_reward_it_maximises():
    pipe = _ddim()
    plain = run(pipe, batch=6).images.mean(dim=(1, 2, 3)).mean()
    guided = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=6)], batch=6).images.mean(dim=(1, 2, 3)).mean()
    assert guided > plain + 0.02


def test_chunked_candidate_evaluation_matches_one_call():
    pipe = _ddim()
    one = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=4)])
    chunked = run(pipe, [SVDD(PosteriorMeanValue(brightness, max_batch=3), num_candidates=4, max_batch=3)])
    assert torch.allclose(one.images, chunked.images, atol=1e-5)
    assert one.nfe == chunked.nfe


def test_soft_selection_is_seeded():
    pipe = _ddim()
    a = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=3, alpha=0.5, seed=3)])
    b = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=3, alpha=0.5, seed=3)])
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize(
    "hook, per_step", [(BestOfN(brightness, n=3), 3), (FKSteering(brightness, num_particles=3, resample_every=2, resample_window=(0, 1)), 3)]
)
def test_particle_methods_cost_n_evaluations_per_step(hook, per_step):
    pipe = _ddim()
    out = run(pipe, [hook], steps=6, batch=2)
    assert out.nfe == per_step * 6
    assert out.images.shape == (2, 3, 8, 8)


def test_best_of_n_beats_plain_on_its_reward_and_n1_is_plain():
    pipe = _ddim()
    plain = run(pipe, batch=6, eta=0.0)
    best = run(pipe, [BestOfN(brightness, n=6)], batch=6, eta=0.0)
    assert brightness(best.images).mean() > brightness(plain.images).mean()
    assert torch.equal(run(pipe, [BestOfN(brightness, n=1)], eta=0.0).images, run(pipe, eta=0.0).images)


def test_fk_resamples_and_improves_reward():
    pipe = _ddim()
    hook = FKSteering(brightness, num_particles=6, potential="max", resample_every=1, resample_window=(0, 1), lmbda=50.0, ess_threshold=None)
    out = run(pipe, [hook], batch=4, steps=6)
    assert hook.resamplings > 0
    assert brightness(out.images).mean() > brightness(run(pipe, batch=4, steps=6).images).mean()


def test_deterministic_schedulers_are_refused_before_sampling(count_calls):
    pipe = _ddim()
    calls = count_calls(pipe.unet)
    with pytest.raises(ValueError, match=r"scheduler: SVDD needs a stochastic transition.*eta=1.0"):
        run(pipe, [SVDD(PosteriorMeanValue(brightness))], eta=0.0)
    sd3 = tiny.sd3_pipeline()
    sd3_calls = count_calls(sd3.transformer)
    kwargs = dict(num_inference_steps=3, guidance_scale=1.0, output_type="latent", **tiny.sd3_prompt(1))
    with pytest.raises(ValueError, match=r"stochastic_sampling=True"):
        steer(sd3)(hooks=[SVDD(PosteriorMeanValue(brightness))], **kwargs)
    assert calls.calls == 0 and sd3_calls.calls == 0
    sd3.scheduler = FlowMatchEulerDiscreteScheduler.from_config(sd3.scheduler.config, stochastic_sampling=True)
    out = steer(sd3)(hooks=[SVDD(PosteriorMeanValue(brightness), num_candidates=2)], generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.nfe == 1 + 2 * 2


@pytest.mark.parametrize(
    "reward, error, pattern",
    [
        (lambda im: im.mean(dim=(1, 2, 3))[:1], ValueError, r"reward: must return shape \(\d+,\)"),
        (lambda im: torch.full((len(im),), float("nan")), ValueError, r"reward: returned NaN"),
        (lambda im: [0.0] * len(im), TypeError, r"reward: must return a torch.Tensor"),
    ],
)
def test_bad_rewards_are_named(reward, error, pattern):
    with pytest.raises(error, match=pattern):
        run(_ddim(), [SVDD(PosteriorMeanValue(reward), num_candidates=2)])


def test_a_raising_reward_names_step_and_candidate():
    def fragile(images):
        if (images.mean(dim=(1, 2, 3)) > 0.5).any():
            raise RuntimeError("black box failed")
        return torch.zeros(len(images))

    with pytest.raises(RewardError, match=r"reward raised at step \d+, candidate \d+ of sample \d+: RuntimeError: black box failed"):
        run(_ddim(), [SVDD(PosteriorMeanValue(fragile), num_candidates=3)], batch=4)


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: SVDD(PosteriorMeanValue(brightness), num_candidates=0), r"num_candidates: must be >= 1, got 0"),
        (lambda: SVDD(PosteriorMeanValue(brightness), alpha=-1.0), r"alpha: must be >= 0, got -1.0"),
        (lambda: SVDD(brightness), r"value: expected a PosteriorMeanValue"),
        (lambda: PosteriorMeanValue("not callable"), r"reward: expected a callable"),
        (lambda: FKSteering(brightness, potential="mean"), r"potential: one of"),
        (lambda: FKSteering(brightness, lmbda=0), r"lmbda: must be > 0"),
        (lambda: BestOfN(brightness, n=0), r"num_particles: must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused(build, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        build()


def test_learned_value_costs_one_evaluation_per_step():
    pipe = _ddim()

    def value_net(x, t):
        return x.mean(dim=(1, 2, 3))

    out = run(pipe, [SVDD(LearnedValue(value_net), num_candidates=4)], steps=6)
    assert out.nfe == 6 and out.reward_calls == 0


def test_one_candidate_at_alpha_zero_is_plain_sampling():
    pipe = _ddim()
    same = run(pipe, [SVDD(PosteriorMeanValue(brightness), num_candidates=1, alpha=0.0)])
    assert torch.equal(run(pipe).images, same.images)
