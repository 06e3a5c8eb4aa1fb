"""Same seed, same output: every pipeline gives byte-identical results on CPU."""

import io

import pytest
import torch
from diffusers import LCMScheduler

from gen import testing as tiny
from gen.guidance import SVDD, PosteriorMeanValue
from gen.pipelines import HybridDistilledPipeline, LargeImagePipeline, TextToLargeImagePipeline, steer


class_pipe, embedding_pipe, text_pipe, ddim = tiny.class_pipeline, tiny.embedding_pipeline, tiny.text_pipeline, tiny.ddim_pipeline


CASES = {
    "ClassConditionalPipeline": lambda g: class_pipe()(class_labels=[1, 2], guidance_scale=2.0, num_inference_steps=4, eta=0.5, generator=g),
    "TextToImagePipeline": lambda g: text_pipe()(["a cat", "a dog"], guidance_scale=2.0, num_inference_steps=3, generator=g),
    "EmbeddingToImagePipeline": lambda g: embedding_pipe()(
        images=torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), num_inference_steps=3, generator=g
    ),
    "LargeImagePipeline": lambda g: embedding_pipe(LargeImagePipeline)(
        embedding_grid=torch.randn(2, 3, tiny.EMBEDDING_WIDTH, generator=torch.Generator().manual_seed(1)), overlap=4, num_inference_steps=2, generator=g
    ),
    "TextToLargeImagePipeline": lambda g: TextToLargeImagePipeline(text_pipe(in_channels=tiny.EMBEDDING_WIDTH), embedding_pipe(LargeImagePipeline))(
        "tissue", grid_size=2, grid_steps=2, num_inference_steps=2, generator=g
    ),
    "HybridDistilledPipeline": lambda g: HybridDistilledPipeline(
        class_pipe(), class_pipe(1, LCMScheduler(num_train_timesteps=100, original_inference_steps=10)), base_steps=1, distilled_steps=3
    )(class_labels=[3, 4], generator=g),
    "steer(DDIMPipeline) + SVDD": lambda g: steer(ddim())(
        batch_size=2,
        num_inference_steps=3,
        eta=1.0,
        generator=g,
        hooks=[SVDD(PosteriorMeanValue(lambda im: im.mean(dim=(1, 2, 3))), num_candidates=3, alpha=0.5)],
    ),
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
