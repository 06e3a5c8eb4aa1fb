"""Where users run gen: half precision, on the CPU here and on CUDA where there is one.

Every test runs for each placement: bfloat16 on the CPU (CI), float16 and bfloat16 on CUDA (marked `gpu`,
skipped without a GPU; `make gpu-test` runs them). Models are tiny and random, except the exactness tests
at real sizes, which run on CUDA only.
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, LCMScheduler

from gen import testing as tiny
from gen.analysis import DTVisualizer
from gen.conditioning import CADS
from gen.guidance import SVDD, BestOfN, FKSteering, LearnedValue, PosteriorMeanValue, ValueNetwork
from gen.pipelines import HybridDistilledPipeline, HybridHook, LargeImagePipeline, TextToLargeImagePipeline, steer
from gen.core.denoiser import Denoiser

pytestmark = pytest.mark.slow

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
PLACEMENTS = [
    pytest.param(("cpu", torch.bfloat16), id="cpu-bf16"),
    pytest.param(("cuda", torch.float16), id="cuda-fp16", marks=[pytest.mark.gpu, needs_cuda]),
    pytest.param(("cuda", torch.bfloat16), id="cuda-bf16", marks=[pytest.mark.gpu, needs_cuda]),
]


@pytest.fixture(params=PLACEMENTS)
def placement(request):
    return request.param


def placed(pipe, placement):
    device, dtype = placement
    return pipe.to(device, dtype)


def brightness(images) -> torch.Tensor:
    return images.float().mean(dim=(1, 2, 3))


def assert_images(images, count: int, device: str):
    assert isinstance(images, torch.Tensor) and images.shape[0] == count, getattr(images, "shape", images)
    assert images.device.type == device
    assert torch.isfinite(images.float()).all()
    assert 0 <= images.float().min() and images.float().max() <= 1
    assert images.float().std() > 0  # not a constant image: the model ran


# -- gen's pipelines ----------------------------------------------------------------------------------------------------
GEN_PIPELINES = {
    "ClassConditionalPipeline": lambda p, g: placed(tiny.class_pipeline(), p)(
        class_labels=[1, 2], guidance_scale=2.0, num_inference_steps=3, generator=g, output_type="pt"
    ),
    "TextToImagePipeline": lambda p, g: placed(tiny.text_pipeline(), p)(
        ["a cat", "a red dog"], guidance_scale=2.0, num_inference_steps=3, generator=g, output_type="pt"
    ),
    # images given on the CPU in float64: the pipeline moves and casts them
    "EmbeddingToImagePipeline": lambda p, g: placed(tiny.embedding_pipeline(in_time=True), p)(
        images=torch.rand(2, 3, 16, 16, dtype=torch.float64), guidance_scale=2.0, num_inference_steps=3, generator=g, output_type="pt"
    ),
    "LargeImagePipeline": lambda p, g: placed(tiny.embedding_pipeline(LargeImagePipeline), p)(
        reference=torch.rand(1, 3, 40, 48, dtype=torch.float64), overlap=4, guidance_scale=2.0, num_inference_steps=2, generator=g, output_type="pt"
    ),
    "TextToLargeImagePipeline": lambda p, g: TextToLargeImagePipeline(
        placed(tiny.text_pipeline(in_channels=tiny.EMBEDDING_WIDTH), p), placed(tiny.embedding_pipeline(LargeImagePipeline), p)
    )("tissue", grid_size=2, grid_steps=2, num_inference_steps=2, overlap=4, generator=g, output_type="pt"),
    "HybridDistilledPipeline": lambda p, g: HybridDistilledPipeline(
        placed(tiny.class_pipeline(), p), placed(tiny.class_pipeline(1, LCMScheduler(num_train_timesteps=100, original_inference_steps=10)), p)
    )(class_labels=[3, 4], guidance_scale=2.0, distilled_steps=3, generator=g, output_type="pt"),
}


@pytest.mark.parametrize("name", list(GEN_PIPELINES))
def test_gen_pipelines_sample_in_half_precision(name, placement):
    device = placement[0]
    out = GEN_PIPELINES[name](placement, torch.Generator().manual_seed(0))
    assert_images(out.images, out.images.shape[0], device)
    assert out.nfe > 0
    again = GEN_PIPELINES[name](placement, torch.Generator().manual_seed(0))
    assert torch.equal(out.images, again.images)


@pytest.mark.parametrize("generator_device", ["cpu", "model"])
def test_a_generator_on_the_cpu_or_on_the_device_both_work(placement, generator_device):
    device, _ = placement
    pipe = placed(tiny.class_pipeline(scheduler=DDPMScheduler(num_train_timesteps=100)), placement)
    where = "cpu" if generator_device == "cpu" else device
    hook = SVDD(PosteriorMeanValue(brightness), num_candidates=2, alpha=0.5)
    outs = [
        pipe(class_labels=[1, 2], num_inference_steps=3, generator=torch.Generator(where).manual_seed(0), hooks=[hook], output_type="pt").images
        for _ in range(2)
    ]
    assert_images(outs[0], 2, device)
    assert torch.equal(outs[0], outs[1])


# -- steer over the stock pipelines --------------------------------------------------------------------------------------
STOCK = {
    "DDPMPipeline": (tiny.ddpm_pipeline, dict(batch_size=2, num_inference_steps=3)),
    "DDIMPipeline": (tiny.ddim_pipeline, dict(batch_size=2, num_inference_steps=3)),
    "DiTPipeline": (tiny.dit_pipeline, dict(class_labels=[1, 7], num_inference_steps=3, guidance_scale=3.0)),
    "StableDiffusionPipeline": (tiny.stable_diffusion_pipeline, dict(prompt=["a cat", "a dog"], num_inference_steps=3, guidance_scale=5.0)),
    "PixArtAlphaPipeline": (tiny.pixart_pipeline, dict(num_inference_steps=3, guidance_scale=4.0, use_resolution_binning=False, **tiny.pixart_prompt(2))),
    "StableDiffusion3Pipeline": (tiny.sd3_pipeline, dict(num_inference_steps=3, guidance_scale=4.0, **tiny.sd3_prompt(2))),
}


def _to(value, device, dtype):
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)
    return value


@pytest.mark.parametrize("name", list(STOCK))
def test_steer_equals_stock_in_half_precision(name, placement):
    device, dtype = placement
    build, kwargs = STOCK[name]
    pipe = placed(build(), placement)
    kwargs = {k: _to(v, device, dtype) for k, v in kwargs.items()}
    stock = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="pt").images
    steered = steer(pipe)(**kwargs, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(steered.images, stock), (steered.images.float() - stock.float()).abs().max()
    assert steered.images.device.type == device


# -- hooks -------------------------------------------------------------------------------------------------------------
def _value_net(in_channels: int) -> ValueNetwork:
    torch.manual_seed(0)
    return ValueNetwork(in_channels=in_channels, resolution=8, width=8, num_train_timesteps=100).eval()  # float32, whatever the model


HOOKS = {
    "CADS": lambda device: CADS(noise_scale=0.5),
    "SVDD-PM": lambda device: SVDD(PosteriorMeanValue(brightness), num_candidates=3),
    "SVDD-PM soft": lambda device: SVDD(PosteriorMeanValue(brightness), num_candidates=3, alpha=0.1),
    "SVDD-MC (float32 value net)": lambda device: SVDD(LearnedValue(_value_net(3).to(device)), num_candidates=3),
    "BestOfN": lambda device: BestOfN(brightness, n=3),
    "FKSteering": lambda device: FKSteering(brightness, num_particles=3, resample_every=1),
    "DTVisualizer": lambda device: DTVisualizer(),
    "HybridHook": lambda device: HybridHook(
        Denoiser(tiny.tiny_unet(num_class_embeds=11, seed=1).to(device), LCMScheduler(num_train_timesteps=100, original_inference_steps=10)),
        base_steps=1,
        distilled_steps=2,
    ),
}


@pytest.mark.parametrize("name", list(HOOKS))
def test_every_hook_runs_in_half_precision(name, placement):
    device, dtype = placement
    pipe = placed(tiny.class_pipeline(scheduler=DDPMScheduler(num_train_timesteps=100)), placement)
    hook = HOOKS[name](device)
    if name == "HybridHook":
        hook.distilled.model.to(dtype)
    kwargs = dict(class_labels=[1, 2, 3], guidance_scale=2.0, num_inference_steps=4, output_type="pt")
    out = pipe(**kwargs, hooks=[hook], generator=torch.Generator().manual_seed(0))
    assert_images(out.images, 3, device)
    again = pipe(**kwargs, hooks=[hook], generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.images, again.images)
    if name.startswith(("SVDD-PM", "BestOfN", "FK")):
        assert out.nfe > 2 * 4  # candidates or particles were evaluated
    if name == "DTVisualizer":
        assert hook.images().shape[:2] == (4, 3)


def test_a_value_guided_run_raises_the_reward_in_half_precision(placement):
    pipe = placed(tiny.class_pipeline(scheduler=DDPMScheduler(num_train_timesteps=100)), placement)
    kwargs = dict(class_labels=[1, 2, 3, 4], num_inference_steps=4, output_type="pt")
    plain = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    guided = pipe(**kwargs, generator=torch.Generator().manual_seed(0), hooks=[SVDD(PosteriorMeanValue(brightness), num_candidates=8)]).images
    assert brightness(guided).mean() > brightness(plain).mean() + 0.02


# -- training ----------------------------------------------------------------------------------------------------------
def test_training_with_cep_bf16_and_ema_resumes_to_the_same_weights(tmp_path, placement):
    from safetensors.torch import load_file

    from gen.training.train import TrainConfig, train

    device, dtype = placement
    if dtype != torch.bfloat16:
        pytest.skip("the trainer's mixed precision is tested in bf16")
    if device == "cpu" and CUDA:
        pytest.skip("accelerate trains on the GPU when there is one")
    steps = 20 if device == "cuda" else 6
    common = dict(
        data="digits",
        condition="class",
        resolution=8,
        block_out_channels="8,16",
        layers_per_block=1,
        attention_levels="1",
        attention_head_dim=4,
        train_batch_size=8,
        max_train_steps=steps,
        lr_warmup_steps=1,
        cep="gaussian",
        mixed_precision="bf16",
        ema_decay=0.9,
        checkpointing_steps=steps // 2,
        progress=False,
    )
    whole = train(TrainConfig(output_dir=str(tmp_path / "whole"), **common))
    half = dict(common, max_train_steps=steps // 2)
    train(TrainConfig(output_dir=str(tmp_path / "resumed"), **half))
    resumed = train(TrainConfig(output_dir=str(tmp_path / "resumed"), resume="latest", **common))
    a = load_file(str(whole / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in a.values())
    if device == "cpu":  # CUDA kernels need not be deterministic
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:
        assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-2


# -- exactness at real sizes, on CUDA -------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_steer_is_bit_exact_over_an_sd15_size_unet_in_fp16():
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD-1.5's UNet config, 860M
    pipe = StableDiffusionPipeline(
        vae=tiny.tiny_vae(),
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        safety_checker=None,
        feature_extractor=None,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1),
        requires_safety_checker=False,
    )
    pipe = pipe.to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    embeds, negative = torch.randn(2, 77, 768, generator=g).half().cuda(), torch.randn(2, 77, 768, generator=g).half().cuda()
    kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=8, guidance_scale=7.5, output_type="latent")
    stock = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    steered = steer(pipe)(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(steered, stock)


@pytest.mark.gpu
@needs_cuda
def test_steer_is_bit_exact_over_a_dit_xl_size_transformer_in_fp16():
    from diffusers import DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000
    ).eval()  # DiT-XL/2 at 256 px, 675M; eval: no class-label dropout
    pipe = DiTPipeline(transformer=dit, vae=tiny.tiny_vae(), scheduler=DDIMScheduler()).to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    # DiTPipeline has no latent output ("latent" gives numpy images): compare the decoded tensors
    kwargs = dict(class_labels=[1, 207, 360, 980], num_inference_steps=8, guidance_scale=4.0, output_type="pt")
    stock = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    steered = steer(pipe)(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(steered, stock)


# -- offloading: composites and the image encoder ---------------------------------------------------------------------------
def _embedding_pipeline_with_encoder():
    from gen.embedders import PatchEncoder

    pipe = tiny.embedding_pipeline(in_time=True)
    torch.manual_seed(0)
    pipe.set_embedder(PatchEncoder(patch_size=16, width=8, embedding_dim=tiny.EMBEDDING_WIDTH, projection_dim=8).eval())
    return pipe


OFFLOADED = {
    "EmbeddingToImagePipeline": (
        _embedding_pipeline_with_encoder,
        lambda pipe, g: pipe(
            images=torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)),
            guidance_scale=2.0,
            num_inference_steps=3,
            generator=g,
            output_type="pt",
        ),
    ),
    "HybridDistilledPipeline": (
        lambda: HybridDistilledPipeline(tiny.class_pipeline(), tiny.class_pipeline(1, LCMScheduler(num_train_timesteps=100, original_inference_steps=10))),
        lambda pipe, g: pipe(class_labels=[3, 4], guidance_scale=2.0, distilled_steps=3, generator=g, output_type="pt"),
    ),
    "TextToLargeImagePipeline": (
        lambda: TextToLargeImagePipeline(tiny.text_pipeline(in_channels=tiny.EMBEDDING_WIDTH), tiny.embedding_pipeline(LargeImagePipeline)),
        lambda pipe, g: pipe("tissue", grid_size=2, grid_steps=2, num_inference_steps=2, overlap=4, generator=g, output_type="pt"),
    ),
}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", list(OFFLOADED))
def test_model_cpu_offload_gives_the_images_of_a_pipeline_held_on_the_gpu(name):
    build, call = OFFLOADED[name]
    on_gpu = build().to("cuda", torch.float16)
    expected = call(on_gpu, torch.Generator().manual_seed(0)).images
    offloaded = build().to(torch.float16)
    offloaded.enable_model_cpu_offload()
    images = call(offloaded, torch.Generator().manual_seed(0)).images
    assert images.device.type == "cuda" and torch.allclose(images.float(), expected.float(), atol=2e-3)
    modules = [m for m in offloaded.components.values() if isinstance(m, torch.nn.Module)]
    for part in getattr(offloaded, "parts", dict)().values():
        modules += [m for m in part.components.values() if isinstance(m, torch.nn.Module)]
    assert modules and all(next(m.parameters()).device.type == "cpu" for m in modules)  # handed back after the call
