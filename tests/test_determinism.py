"""Same seed, same output: every pipeline gives byte-identical results on CPU."""

import io

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, LCMScheduler

from gen import testing as tiny
from gen.embedders import CallableEmbedder
from gen.guidance import SVDD, PosteriorMeanValue
from gen.pipelines import ClassConditionalPipeline, EmbeddingToImagePipeline, HybridDistilledPipeline, LargeImagePipeline, TextToImagePipeline, TextToLargeImagePipeline, steer
from gen.training.models import Architecture, build_backbone


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def class_pipe(seed=0, scheduler=None):
    return _quiet(ClassConditionalPipeline(scheduler=scheduler or DDIMScheduler(num_train_timesteps=100), unet=tiny.tiny_unet(num_class_embeds=11, seed=seed)))


def embedding_pipe(cls=EmbeddingToImagePipeline):
    torch.manual_seed(0)
    unet = build_backbone("unet", "embedding", sample_size=16, channels=3, condition_width=12,
                          arch=Architecture(block_out_channels=(8, 16), attention_levels=(1,), layers_per_block=1, attention_head_dim=4, cross_attention_dim=8)).eval()
    pipe = _quiet(cls(scheduler=DDIMScheduler(num_train_timesteps=100), unet=unet))
    pipe.set_embedder(CallableEmbedder(lambda im: im.mean(dim=(2, 3)).repeat(1, 4)))
    return pipe


def text_pipe(in_channels=3):
    tokenizer, encoder = tiny.minilm()
    torch.manual_seed(0)
    unet = build_backbone("unet", "text", sample_size=8, channels=in_channels, condition_width=384,
                          arch=Architecture(block_out_channels=(8, 16), attention_levels=(1,), layers_per_block=1, attention_head_dim=4))
    return _quiet(TextToImagePipeline(tokenizer=tokenizer, text_encoder=encoder, scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False), unet=unet.eval()))


def ddim():
    return _quiet(DDIMPipeline(tiny.tiny_unet(), DDIMScheduler(num_train_timesteps=100)))


CASES = {
    "ClassConditionalPipeline": lambda g: class_pipe()(class_labels=[1, 2], guidance_scale=2.0, num_inference_steps=4, eta=0.5, generator=g),
    "TextToImagePipeline": lambda g: text_pipe()(["a cat", "a dog"], guidance_scale=2.0, num_inference_steps=3, generator=g),
    "EmbeddingToImagePipeline": lambda g: embedding_pipe()(images=torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), num_inference_steps=3, generator=g),
    "LargeImagePipeline": lambda g: embedding_pipe(LargeImagePipeline)(embedding_grid=torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(1)), overlap=4, num_inference_steps=2, generator=g),
    "TextToLargeImagePipeline": lambda g: TextToLargeImagePipeline(text_pipe(in_channels=12), embedding_pipe(LargeImagePipeline))("tissue", grid_size=2, grid_steps=2, num_inference_steps=2, generator=g),
    "HybridDistilledPipeline": lambda g: HybridDistilledPipeline(class_pipe(), class_pipe(1, LCMScheduler(num_train_timesteps=100, original_inference_steps=10)), base_steps=1, distilled_steps=2)(
        class_labels=[3, 4], num_inference_steps=5, generator=g),
    "steer(DDIMPipeline) + SVDD": lambda g: steer(ddim())(batch_size=2, num_inference_steps=3, eta=1.0, generator=g,
                                                        hooks=[SVDD(PosteriorMeanValue(lambda im: im.mean(dim=(1, 2, 3))), num_candidates=3, alpha=0.5)]),
    "steer(StableDiffusionPipeline)": lambda g: steer(tiny.stable_diffusion_pipeline())("a cat", num_inference_steps=3, guidance_scale=3.0, generator=g),
}


def png_bytes(images) -> list[bytes]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_same_seed_gives_byte_identical_images(name):
    first = CASES[name](torch.Generator().manual_seed(0)).images
    second = CASES[name](torch.Generator().manual_seed(0)).images
    assert png_bytes(first) == png_bytes(second)
    third = CASES[name](torch.Generator().manual_seed(1)).images
    assert png_bytes(first) != png_bytes(third)
