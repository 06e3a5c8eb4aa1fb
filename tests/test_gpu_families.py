"""The modern families through steer on a GPU, in bfloat16 (marked `gpu`; skipped without one): with no hooks
the output is stock's bit for bit, and SVDD runs on the device. The same cases in bfloat16 on the CPU run in
the fast tier, so a failure here points at the device, not the mechanism."""

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from gen import testing as tiny
from gen.guidance import SVDD, PosteriorMeanValue
from gen.pipelines import steer

CUDA = torch.cuda.is_available()
PLACEMENTS = [
    pytest.param(("cpu", torch.bfloat16), id="cpu-bf16"),
    pytest.param(("cuda", torch.bfloat16), id="cuda-bf16", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]),
]
FAMILIES = {
    "sdxl": (
        tiny.sdxl_pipeline,
        lambda: dict(prompt=["a cat", "a red dog"], guidance_scale=5.0),
        lambda s: EulerAncestralDiscreteScheduler.from_config(s.config),
    ),
    "flux": (
        lambda: tiny.flux_pipeline(guidance_embeds=True),
        lambda: dict(prompt=["a cat", "a red dog"], height=16, width=16, max_sequence_length=8),
        lambda s: FlowMatchEulerDiscreteScheduler.from_config(s.config, stochastic_sampling=True),
    ),
    "sana": (
        tiny.sana_pipeline,
        lambda: dict(height=32, width=32, use_resolution_binning=False, **tiny.sana_prompt(2)),
        lambda s: FlowMatchEulerDiscreteScheduler.from_config(s.config, stochastic_sampling=True),
    ),
}


def _on(placement, kwargs):
    device, dtype = placement
    return {
        k: v.to(device, dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in kwargs.items()
    }


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_steer_equals_stock_and_svdd_runs(family, placement):
    build, args, stochastic = FAMILIES[family]
    device, dtype = placement
    pipe = build().to(device, dtype)
    kwargs = dict(_on(placement, args()), num_inference_steps=4, output_type="latent")
    stock = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    ours = steer(pipe)(**kwargs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(stock, ours.images) and ours.images.device.type == device
    pipe.scheduler = stochastic(pipe.scheduler)
    guided = steer(pipe)(
        **dict(kwargs, output_type="pt"),
        generator=torch.Generator().manual_seed(0),
        hooks=[SVDD(PosteriorMeanValue(lambda images: images.float().mean(dim=(1, 2, 3))), num_candidates=2)],
    )
    assert torch.isfinite(guided.images.float()).all() and guided.reward_calls >= 3 * 2
