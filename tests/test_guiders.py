"""diffusers' guiders as gen's guidance rule (`guider=` on `sample()` and on steered pipelines): each step run as
the modular pipelines run it, one backbone call per branch the guider prepares, combined by its forward."""

import pytest
import torch
from diffusers.guiders import AdaptiveProjectedGuidance, ClassifierFreeGuidance, ClassifierFreeZeroStarGuidance

from gen import Denoiser, sample
from gen import testing as tiny
from gen.pipelines import steer


def _run(separate_branches=False, **kwargs):
    pipe = tiny.class_pipeline()
    labels = torch.tensor([1, 3, 7])
    den = Denoiser(pipe.unet, pipe.scheduler, separate_branches=separate_branches)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return sample(den, x, num_inference_steps=6, cond={"class_labels": labels}, uncond={"class_labels": torch.full_like(labels, 10)}, **kwargs)


def test_the_cfg_guider_is_gens_cfg_with_one_call_per_branch():
    """The modular pipelines evaluate each branch in its own call: bit for bit gen's CFG with separate branches."""
    ours = _run(guider=ClassifierFreeGuidance(guidance_scale=4.0))
    reference = _run(separate_branches=True, guidance_scale=4.0)
    assert torch.equal(ours.samples, reference.samples) and ours.nfe == reference.nfe == 12
    batched = _run(guidance_scale=4.0)  # gen's own CFG stacks the branches in one call, as the stock pipelines do
    assert torch.allclose(ours.samples, batched.samples, atol=1e-5)


def test_a_guiders_window_and_its_rule_take_effect():
    full = _run(guider=ClassifierFreeGuidance(guidance_scale=4.0))
    late = _run(guider=ClassifierFreeGuidance(guidance_scale=4.0, start=0.5))
    assert late.nfe == 3 * 1 + 3 * 2 and not torch.allclose(full.samples, late.samples)
    for guider in (AdaptiveProjectedGuidance(guidance_scale=4.0, eta=0.0), ClassifierFreeZeroStarGuidance(guidance_scale=4.0)):
        other = _run(guider=guider)
        assert other.nfe == 12 and (other.samples - full.samples).abs().max() > 1e-3, type(guider).__name__


def test_through_steer_on_sdxl():
    pipe = steer(tiny.sdxl_pipeline())
    args = dict(prompt=["a cat", "a red dog"], num_inference_steps=4, guidance_scale=5.0, output_type="pt")
    stock = pipe(**args, generator=torch.Generator().manual_seed(0))
    guided = pipe(**args, generator=torch.Generator().manual_seed(0), guider=ClassifierFreeGuidance(guidance_scale=5.0))
    assert torch.allclose(stock.images, guided.images, atol=1e-5) and guided.nfe == 8
    projected = pipe(**args, generator=torch.Generator().manual_seed(0), guider=AdaptiveProjectedGuidance(guidance_scale=5.0, eta=0.0))
    assert (projected.images - stock.images).abs().max() > 1e-3


def test_a_guider_needing_the_unconditional_branch_is_refused_without_one():
    pipe = tiny.class_pipeline()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="guider: ClassifierFreeGuidance needs the unconditional branch"):
        sample(Denoiser(pipe.unet, pipe.scheduler), x, num_inference_steps=2, cond={"class_labels": torch.tensor([1])}, guider=ClassifierFreeGuidance())
    with pytest.raises(TypeError, match="guider: expected a diffusers guider"):
        sample(Denoiser(pipe.unet, pipe.scheduler), x, num_inference_steps=2, cond={"class_labels": torch.tensor([1])}, guider=4.0)


def _modular(blocks, stock, **components):
    pipe = blocks.init_pipeline()
    pipe.update_components(**{k: v for k, v in stock.components.items() if v is not None}, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_same_guider_gives_the_modular_pipelines_image():
    """diffusers' modular SDXL pipeline with a guider, and steer(stock SDXL) with the same guider: bit for bit.
    Flux (guidance embedded, no CFG guider): within 1e-6, the two loops' own rounding (no guider involved)."""
    from diffusers.modular_pipelines.flux.modular_blocks_flux import FluxAutoBlocks
    from diffusers.modular_pipelines.stable_diffusion_xl.modular_blocks_stable_diffusion_xl import StableDiffusionXLAutoBlocks

    for guider in (ClassifierFreeGuidance(guidance_scale=5.0), AdaptiveProjectedGuidance(guidance_scale=5.0, eta=0.0)):
        stock = tiny.sdxl_pipeline()
        args = dict(prompt=["a cat", "a red dog"], num_inference_steps=4, output_type="pt")
        modular = _modular(StableDiffusionXLAutoBlocks(), stock, guider=guider)(**args, generator=torch.Generator().manual_seed(0), output="images")
        ours = steer(stock)(**args, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), guider=guider)
        assert torch.equal(modular, ours.images), type(guider).__name__
    stock = tiny.flux_pipeline(guidance_embeds=True)
    args = dict(prompt=["a cat", "a red dog"], height=16, width=16, max_sequence_length=8, num_inference_steps=4, output_type="pt")
    modular = _modular(FluxAutoBlocks(), stock)(**args, generator=torch.Generator().manual_seed(0), output="images")
    assert torch.allclose(modular, steer(stock)(**args, generator=torch.Generator().manual_seed(0)).images, atol=1e-6)


def test_guiders_that_hook_attention_layers_work_through_steer_as_in_the_modular_pipeline():
    """PAG and SEG put hooks on the backbone's attention between prepare_models and cleanup_models: through steer
    the same guider gives the modular SDXL pipeline's image bit for bit, three branches a step inside its window."""
    from diffusers.guiders import PerturbedAttentionGuidance, SmoothedEnergyGuidance
    from diffusers.hooks import LayerSkipConfig
    from diffusers.hooks.smoothed_energy_guidance_utils import SmoothedEnergyGuidanceConfig
    from diffusers.modular_pipelines.stable_diffusion_xl.modular_blocks_stable_diffusion_xl import StableDiffusionXLAutoBlocks

    mid = "mid_block.attentions.0.transformer_blocks"
    window = dict(guidance_scale=5.0)
    pag = PerturbedAttentionGuidance(
        **window,
        perturbed_guidance_scale=2.0,
        perturbed_guidance_start=0.0,
        perturbed_guidance_stop=1.0,
        perturbed_guidance_config=LayerSkipConfig(indices=[0], fqn=mid, skip_attention=False, skip_attention_scores=True, skip_ff=False),
    )
    seg = SmoothedEnergyGuidance(
        **window, seg_guidance_scale=2.0, seg_guidance_start=0.0, seg_guidance_stop=1.0, seg_guidance_config=SmoothedEnergyGuidanceConfig(indices=[0], fqn=mid)
    )
    args = dict(prompt=["a cat", "a red dog"], num_inference_steps=4, output_type="pt")
    plain = steer(tiny.sdxl_pipeline())(**args, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
    for guider in (pag, seg):
        stock = tiny.sdxl_pipeline()
        modular = _modular(StableDiffusionXLAutoBlocks(), stock, guider=guider)(**args, generator=torch.Generator().manual_seed(0), output="images")
        ours = steer(stock)(**args, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), guider=guider)
        assert torch.equal(modular, ours.images) and ours.nfe > plain.nfe, type(guider).__name__
        after = steer(stock)(**args, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
        assert torch.equal(after.images, plain.images), "the guider's hooks are gone after the call"
    assert (ours.images - plain.images).abs().max() > 0 and (
        steer(tiny.sdxl_pipeline())(**args, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), guider=pag).images - plain.images
    ).abs().max() > 1e-3


def test_sd3_with_a_guider_gives_the_modular_pipelines_image():
    """SD3 (embeddings given: the modular text-encoder block is left out, as the tiny pipeline has no encoders)."""
    from diffusers.modular_pipelines.stable_diffusion_3 import StableDiffusion3AutoBlocks

    stock = tiny.sd3_pipeline()
    blocks = StableDiffusion3AutoBlocks()
    blocks.sub_blocks.pop("text_encoder")
    args = dict(**tiny.sd3_prompt(2), num_inference_steps=4, output_type="pt", height=32, width=32)
    guider = AdaptiveProjectedGuidance(guidance_scale=5.0, eta=0.0)
    modular = _modular(blocks, stock, guider=guider)(**args, generator=torch.Generator().manual_seed(0), output="images")
    ours = steer(stock)(**args, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), guider=guider)
    assert torch.equal(modular, ours.images) and ours.nfe == 8


def test_gens_own_pipelines_take_a_guider():
    pipe = tiny.class_pipeline()
    args = dict(class_labels=[1, 3], num_inference_steps=5, output_type="pt")
    ours = pipe(**args, guider=ClassifierFreeGuidance(guidance_scale=3.0), generator=torch.Generator().manual_seed(0))
    plain = pipe(**args, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ours.images, plain.images, atol=1e-5) and ours.nfe == plain.nfe == 10
