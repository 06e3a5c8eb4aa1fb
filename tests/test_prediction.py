"""Prediction-type conversions: eps <-> x0 <-> v <-> flow round trips for random schedules and timesteps."""

import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from gen.core import prediction, schedulers

SCHEDULERS = {
    "vp": lambda beta_end: DDIMScheduler(num_train_timesteps=1000, beta_end=beta_end),
    "ve": lambda beta_end: EulerDiscreteScheduler(num_train_timesteps=1000, beta_end=beta_end),
    "flow": lambda beta_end: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000),
}


@settings(max_examples=60, deadline=None)
@given(
    family=st.sampled_from(sorted(SCHEDULERS)),
    beta_end=st.floats(0.005, 0.03),
    t=st.integers(1, 998),
    source=st.sampled_from(["epsilon", "v_prediction", "sample", "flow"]),
    target=st.sampled_from(["epsilon", "v_prediction", "sample", "flow"]),
    seed=st.integers(0, 2**16),
)
def test_round_trips_preserve_the_x0_estimate(family, beta_end, t, source, target, seed):
    scheduler = SCHEDULERS[family](beta_end)
    level = schedulers.noise_level(scheduler, t)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x = level.alpha * x0 + level.sigma * eps
    out = prediction.from_x0(x0, x, level, source)
    assert torch.allclose(prediction.to_x0(out, x, level, source), x0, atol=1e-6, rtol=1e-6)
    converted = prediction.convert(out, x, level, source, target)
    back = prediction.convert(converted, x, level, target, source)
    assert torch.allclose(back, out, atol=1e-5, rtol=1e-5)
    if target == "epsilon":
        assert torch.allclose(converted, eps, atol=1e-5, rtol=1e-5)


def test_noise_levels_match_the_schedulers_own_x0():
    """gen's x0 equals the pred_original_sample that diffusers' own step computes."""
    g = torch.Generator().manual_seed(0)
    for ptype in ("epsilon", "v_prediction", "sample"):
        for scheduler in (DDIMScheduler(prediction_type=ptype, clip_sample=False), EulerDiscreteScheduler(prediction_type=ptype)):
            scheduler.set_timesteps(10)
            t = scheduler.timesteps[3]
            x = torch.randn(1, 2, 4, 4, generator=g)
            out = torch.randn(1, 2, 4, 4, generator=g)
            if isinstance(scheduler, EulerDiscreteScheduler):
                scheduler._step_index = 3
            expected = scheduler.step(out, t, x).pred_original_sample
            ours = prediction.to_x0(out, x, schedulers.noise_level(scheduler, t), "sample" if ptype == "sample" else ptype)
            assert torch.allclose(ours, expected, atol=1e-5), (type(scheduler).__name__, ptype)


def test_flow_level_is_sigma():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(5)
    for t, sigma in zip(scheduler.timesteps, scheduler.sigmas):
        level = schedulers.noise_level(scheduler, t)
        assert abs(float(level.sigma) - float(sigma)) < 1e-6 and abs(float(level.alpha) - (1 - float(sigma))) < 1e-6
