"""gen's hooks on the families `steer` runs through the stock call (SDXL, Flux, SANA, PixArt-Σ): value
guidance with a reward on the decoded image raises the reward over plain sampling on every family (several
seeds, a margin) and fails when the selection is broken; CADS reaches each family's conditions (SDXL's pooled
embeddings and time ids too); NFE is counted as the stock loop spends it; a deterministic default sampler
gets the refusal naming the stochastic option; base-first hybrids run across two models of one family."""

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from gen import testing as tiny
from gen.conditioning import CADS
from gen.core.backbones import Backbone, condition_at
from gen.core.hooks import SamplingHook
from gen.guidance import SVDD, BestOfN, PosteriorMeanValue
from gen.guidance import svdd as svdd_module
from gen.pipelines import BaseFirstHook, steer
from gen.pipelines.stock_loop import branches


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3))


FAMILIES = {
    "sdxl": (
        lambda: tiny.sdxl_pipeline(EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")),
        dict(prompt=["a cat", "a red dog"], guidance_scale=5.0),
    ),
    "flux": (
        lambda: tiny.flux_pipeline(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)),
        dict(prompt=["a cat", "a red dog"], height=16, width=16, max_sequence_length=8),
    ),
    "sana": (
        lambda: tiny.sana_pipeline(FlowMatchEulerDiscreteScheduler(shift=7.0, stochastic_sampling=True)),
        dict(height=32, width=32, guidance_scale=4.5, use_resolution_binning=False, **tiny.sana_prompt(2)),
    ),
    "pixart_sigma": (
        lambda: tiny.pixart_sigma_pipeline(__import__("diffusers").DDPMScheduler(num_train_timesteps=100)),
        dict(guidance_scale=4.0, use_resolution_binning=False, **tiny.pixart_prompt(2)),
    ),
    "lumina2": (
        lambda: tiny.lumina2_pipeline(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)),
        dict(height=16, width=16, guidance_scale=4.0, cfg_normalization=True, cfg_trunc_ratio=0.7, **tiny.pixart_prompt(2)),
    ),
    "auraflow": (
        lambda: tiny.auraflow_pipeline(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)),
        dict(height=16, width=16, guidance_scale=4.0, **tiny.pixart_prompt(2)),
    ),
    "qwen_image": (
        lambda: tiny.qwen_image_pipeline(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)),
        dict(height=32, width=32, true_cfg_scale=4.0, **tiny.qwen_prompt(2)),
    ),
    "z_image": (lambda: tiny.z_image_pipeline(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)), dict(height=32, width=32, **tiny.z_image_prompt(2))),
}
STEPS = 6


def _run(family, seed, hooks=()):
    build, args = FAMILIES[family]
    pipe = steer(build())
    out = pipe(num_inference_steps=STEPS, output_type="pt", generator=torch.Generator().manual_seed(seed), hooks=list(hooks), **args)
    return out, brightness(out.images)


def _gains(family, hooks):
    """Per seed: mean reward with the hooks minus plain (same seed); and the plain rewards' spread."""
    plain = [_run(family, seed)[1] for seed in SEEDS]
    guided = [_run(family, seed, hooks)[1] for seed in SEEDS]
    return torch.stack([(g - p).mean() for g, p in zip(guided, plain)]), torch.cat(plain).std()


SEEDS = (0, 1, 2)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_value_guidance_raises_the_reward_on_every_family(family):
    gains, spread = _gains(family, [SVDD(PosteriorMeanValue(brightness), num_candidates=4)])
    assert (gains > 0).all() and gains.mean() > 0.5 * spread, f"{family}: SVDD gains {gains.tolist()}, plain spread {float(spread):.4f}"
    plain = _run(family, 0)[0]
    out = _run(family, 0, [SVDD(PosteriorMeanValue(brightness), num_candidates=4)])[0]
    # each step but the last evaluates its 4 candidates at the next step, where the chosen one's prediction is reused
    assert out.nfe == plain.nfe + 3 * (plain.nfe - plain.nfe / STEPS) or family == "lumina2", (out.nfe, plain.nfe)
    assert out.nfe > 3 * plain.nfe
    assert out.reward_calls in ((STEPS - 1) * 4, STEPS * 4)  # a last step that draws no noise has nothing to choose


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_broken_selection_loses_the_gain(family, monkeypatch):
    """Mutation: SVDD keeping the worst candidate instead of the best lowers the reward."""
    original = svdd_module.select
    monkeypatch.setattr(svdd_module, "select", lambda values, m, batch, alpha, generator: original(-values, m, batch, alpha, generator))
    gains, spread = _gains(family, [SVDD(PosteriorMeanValue(brightness), num_candidates=4)])
    assert (gains < 0).all() and gains.mean() < -0.5 * spread, gains


@pytest.mark.parametrize("family", list(FAMILIES))
def test_best_of_n_raises_the_reward_on_every_family(family):
    gains, _ = _gains(family, [BestOfN(brightness, n=4)])
    assert gains.mean() > 0, f"{family}: best-of-4 gains {gains.tolist()}"
    assert _run(family, 0, [BestOfN(brightness, n=4)])[0].reward_calls == 4


class Conditions(SamplingHook):
    """Records the condition each step's backbone call takes."""

    def __init__(self):
        self.seen = []

    def condition(self, step, cond):
        self.seen.append(cond)
        return cond


@pytest.mark.parametrize(
    "family, keys",
    [
        ("sdxl", [("encoder_hidden_states",), ("added_cond_kwargs", "text_embeds"), ("added_cond_kwargs", "time_ids")]),
        ("flux", [("encoder_hidden_states",), ("pooled_projections",)]),
        ("sana", [("encoder_hidden_states",)]),
        ("pixart_sigma", [("encoder_hidden_states",)]),
        ("lumina2", [("encoder_hidden_states",)]),
        ("auraflow", [("encoder_hidden_states",)]),
        ("qwen_image", [("encoder_hidden_states",)]),
    ],
)
def test_cads_anneals_every_condition_the_family_has(family, keys):
    before, after = Conditions(), Conditions()
    _run(family, 0, [before, CADS(noise_scale=0.5), after])
    first, clean = before.seen[0], after.seen[0]
    for key in keys:
        assert not torch.equal(condition_at(first, key), condition_at(clean, key)), f"{family}: CADS left {key} unchanged at the first step"
        assert torch.equal(condition_at(before.seen[-1], key), condition_at(after.seen[-1], key)), f"{family}: {key} still annealed at the last step"


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_a_deterministic_default_sampler_is_refused_naming_the_stochastic_option(family):
    pipe = steer(tiny.sdxl_pipeline() if family == "sdxl" else tiny.flux_pipeline())
    args = dict(FAMILIES[family][1])
    fix = "EulerAncestralDiscreteScheduler" if family == "sdxl" else "stochastic_sampling=True"
    with pytest.raises(ValueError, match=fix):
        pipe(num_inference_steps=3, hooks=[SVDD(PosteriorMeanValue(brightness))], **args)


def test_nfe_counts_the_rows_the_stock_loop_spends():
    sdxl = steer(tiny.sdxl_pipeline())(prompt="a cat", num_inference_steps=4, guidance_scale=5.0, output_type="pt")
    unguided = steer(tiny.sdxl_pipeline())(prompt="a cat", num_inference_steps=4, guidance_scale=1.0, output_type="pt")
    flux = steer(tiny.flux_pipeline(guidance_embeds=True))(prompt="a cat", height=16, width=16, num_inference_steps=4, guidance_scale=3.5, output_type="pt")
    true_cfg = steer(tiny.flux_pipeline())(
        prompt="a cat", negative_prompt="blue", true_cfg_scale=3.0, height=16, width=16, num_inference_steps=4, output_type="pt"
    )
    assert (sdxl.nfe, unguided.nfe, flux.nfe, true_cfg.nfe) == (8, 4, 4, 8)


def test_true_cfg_branches_are_two_calls_conditional_first():
    from gen.pipelines.families import flux

    calls = [
        {"hidden_states": torch.zeros(2, 4, 4), "encoder_hidden_states": torch.ones(2, 3, 8)},
        {"hidden_states": torch.zeros(2, 4, 4), "encoder_hidden_states": -torch.ones(1, 3, 8)},
    ]
    cond, uncond = branches(flux.FAMILY, calls, 2, Backbone(tiny.tiny_flux()).spec)
    assert cond["encoder_hidden_states"].sum() > 0 > uncond["encoder_hidden_states"].sum()


def test_base_first_hybrid_runs_across_two_models_of_one_family():
    """SDXL base takes the first step, a Turbo-style student (another UNet) the rest; Flux dev-style base, schnell-style student."""
    base = tiny.sdxl_pipeline(seed=1)
    student = steer(tiny.sdxl_pipeline(seed=2))
    args = dict(prompt=["a cat", "a red dog"], num_inference_steps=4, guidance_scale=5.0, output_type="pt")
    plain = student(generator=torch.Generator().manual_seed(0), **args).images
    hybrid = student(generator=torch.Generator().manual_seed(0), hooks=[BaseFirstHook(base.unet, base_steps=1)], **args)
    assert not torch.equal(plain, hybrid.images) and torch.isfinite(hybrid.images).all() and hybrid.nfe == 8

    dev, schnell = tiny.flux_pipeline(seed=1, guidance_embeds=True), steer(tiny.flux_pipeline(seed=2))
    args = dict(prompt=["a cat", "a red dog"], height=16, width=16, num_inference_steps=4, output_type="pt", max_sequence_length=8)
    plain = schnell(generator=torch.Generator().manual_seed(0), **args).images
    hybrid = schnell(generator=torch.Generator().manual_seed(0), hooks=[BaseFirstHook(dev.transformer, base_steps=1)], **args)
    assert not torch.equal(plain, hybrid.images) and hybrid.nfe == 4


def test_trace_and_observers_see_packed_latents():
    out = steer(tiny.flux_pipeline())(prompt="a cat", height=16, width=16, num_inference_steps=3, output_type="pt", trace=True)
    assert len(out.trace) == 3 and out.trace[0]["x"].shape == (1, 16, 4) and out.trace[-1]["x0"].shape == (1, 16, 4)


class SilenceText(SamplingHook):
    """From step 1 on, zero the text condition: in place in the run's dict, or in a new dict."""

    def __init__(self, in_place: bool):
        self.in_place = in_place

    def condition(self, step, cond):
        if step.index < 1:
            return cond
        if self.in_place:
            cond["encoder_hidden_states"] = torch.zeros_like(cond["encoder_hidden_states"])
            return cond
        return {**cond, "encoder_hidden_states": torch.zeros_like(cond["encoder_hidden_states"])}


def test_a_condition_changed_in_place_reaches_the_backbone():
    """The stacked [uncond; cond] condition is kept across steps only while its values are the same objects."""
    plain = _run("sdxl", 0)[1]
    in_place = _run("sdxl", 0, [SilenceText(in_place=True)])[1]
    replaced = _run("sdxl", 0, [SilenceText(in_place=False)])[1]
    assert torch.equal(in_place, replaced) and not torch.equal(in_place, plain)


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_fk_steering_raises_the_reward(family):
    from gen.guidance import FKSteering

    gains, _ = _gains(family, [FKSteering(brightness, num_particles=4, resample_every=2)])
    assert gains.mean() > 0, f"{family}: FK gains {gains.tolist()}"


def test_dt_visualization_decodes_packed_latents_with_the_runs_decoder():
    from gen.analysis.dt import DTVisualizer

    viz = DTVisualizer()
    steer(tiny.flux_pipeline())(prompt="a cat", height=16, width=16, num_inference_steps=3, output_type="pt", hooks=[viz])
    frames = viz.images()
    assert frames.shape == (3, 1, 3, 16, 16) and 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert len(viz.change_per_step()) == 2


@pytest.mark.parametrize("family", ["flux", "qwen_image"])
def test_the_tiler_cuts_packed_latents(family):
    """A canvas of one tile, tiled with a uniform window, is the untiled packed run bit for bit; a larger
    canvas runs every tile (Flux's and Qwen-Image's tokens are 2x2 patches of a spatial canvas)."""
    from gen import Denoiser, sample
    from gen.core.backbones import pack, unpack
    from gen.core.tiling import TiledDenoiser

    pipe = tiny.flux_pipeline() if family == "flux" else tiny.qwen_image_pipeline()
    den = Denoiser(pipe.transformer, pipe.scheduler)
    if family == "flux":
        embeds, pooled, text_ids = pipe.encode_prompt("a cat", "a cat", max_sequence_length=8)[:3]
        cond = {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids}
        placed = {"img_ids": pipe._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32)}
    else:
        prompt = tiny.qwen_prompt(1)
        cond = {"encoder_hidden_states": prompt["prompt_embeds"], "encoder_hidden_states_mask": prompt["prompt_embeds_mask"]}
        placed = {"img_shapes": [[(1, 4, 4)]]}
    channels = den.in_channels // 4
    canvas = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = sample(den, pack(canvas), num_inference_steps=3, cond={**cond, **placed})
    tiled = sample(TiledDenoiser(den, tile=8, overlap=0, blend="uniform"), canvas, num_inference_steps=3, cond=cond)
    assert torch.equal(unpack(plain.samples, 8, 8), tiled.samples)
    large = sample(
        TiledDenoiser(den, tile=8, overlap=4), torch.randn(1, channels, 16, 24, generator=torch.Generator().manual_seed(1)), num_inference_steps=2, cond=cond
    )
    assert large.samples.shape == (1, channels, 16, 24) and torch.isfinite(large.samples).all() and large.nfe == 2 * 15
