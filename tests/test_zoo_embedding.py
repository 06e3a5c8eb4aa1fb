"""Embedding-conditioned generation on the zoo models: conditioning works, large images have no seams,
and text steers the embedding grid toward the named source."""

import pytest
import torch
import torch.nn.functional as F

from gen import zoo
from gen.pipelines import LargeImagePipeline, TextToLargeImagePipeline
from gen.core.tiling import tile_starts
from gen.data.tissue import random_patches, reference_image


@pytest.fixture(scope="module")
def patches():
    return zoo.load("ihc-patches")  # with its own DDPMScheduler


def test_samples_match_their_conditioning_embeddings_not_shuffled_ones(patches):
    g = torch.Generator().manual_seed(0)
    real = torch.cat([random_patches("ihc", 8, 32, g), random_patches("retina", 8, 32, g)])
    e = patches.embed(real)
    shuffled = e[torch.randperm(len(e), generator=torch.Generator().manual_seed(1))]
    kwargs = dict(num_inference_steps=20, guidance_scale=2.0, output_type="pt")
    matched = patches(embeddings=e, generator=torch.Generator().manual_seed(2), **kwargs).images
    mismatched = patches(embeddings=shuffled, generator=torch.Generator().manual_seed(2), **kwargs).images
    cos_matched = F.cosine_similarity(patches.embed(matched), e).mean().item()
    cos_shuffled = F.cosine_similarity(patches.embed(mismatched), e).mean().item()
    assert cos_matched > cos_shuffled + 0.2, (cos_matched, cos_shuffled)


def edge_gradient_ratio(image: torch.Tensor, tile: int, stride: int) -> float:
    """Mean |gradient| across tile borders over the mean |gradient| inside tiles (both directions)."""
    ratios = []
    for dim in (2, 3):
        grad = (image.narrow(dim, 1, image.shape[dim] - 1) - image.narrow(dim, 0, image.shape[dim] - 1)).abs()
        length = image.shape[dim]
        starts = tile_starts(length, tile, stride)
        borders = {s - 1 for s in starts if s > 0} | {s + tile - 1 for s in starts if s + tile < length}
        mask = torch.zeros(length - 1, dtype=torch.bool)
        mask[sorted(borders)] = True
        profile = grad.mean(dim=[d for d in range(4) if d != dim])
        ratios.append((profile[mask].mean() / profile[~mask].mean()).item())
    return max(ratios)


def test_large_image_has_no_seams(patches):
    large = LargeImagePipeline.from_pipe(patches)
    reference = reference_image("retina")[None, :, 400:560, 300:492]  # the scale the model was trained at
    out = large(reference=reference, overlap=8, num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (1, 3, 160, 192) and out.grid.shape == (5, 6, 64)
    ratio = edge_gradient_ratio(out.images, 32, 24)
    assert ratio <= 1.1, ratio


@pytest.fixture(scope="module")
def text(patches):
    return TextToLargeImagePipeline(zoo.load("ihc-text-grid"), LargeImagePipeline.from_pipe(patches))


def test_text_steers_the_grid_toward_the_named_source(patches, text):
    g = torch.Generator().manual_seed(0)
    reference = torch.cat([patches.embed(random_patches("ihc", 200, 32, g)), patches.embed(random_patches("retina", 200, 32, g))])
    is_retina = torch.tensor([0.0] * 200 + [1.0] * 200)

    def retina_share(prompt):
        """Fraction of generated grid cells whose nearest real patch embedding is a retina patch."""
        grids = text.grid_pipe(prompt, num_images_per_prompt=4, guidance_scale=2.0, num_inference_steps=20, height=8, width=8,
                               generator=torch.Generator().manual_seed(1), output_type="latent").images
        cells = grids.permute(0, 2, 3, 1).reshape(-1, grids.shape[1])
        return is_retina[torch.cdist(cells, reference).argmin(1)].mean().item()

    assert retina_share("retina fundus photograph") > retina_share("immunohistochemistry stained tissue") + 0.4
    out = text("retina fundus photograph", grid_size=4, grid_steps=10, num_inference_steps=4, overlap=8, output_type="pt", generator=torch.Generator().manual_seed(2))
    assert out.images.shape == (1, 3, 128, 128) and out.grid.shape == (4, 4, 64)


def test_text_to_large_image_takes_the_named_sources_colour(text):
    """Retina photographs are red, IHC slides brown and blue: the final images must differ the same way."""

    def redness(prompt):
        images = torch.cat([text(prompt, grid_size=4, grid_steps=10, num_inference_steps=10, guidance_scale=4.0, overlap=8, output_type="pt",
                                 generator=torch.Generator().manual_seed(seed)).images for seed in (2, 3)])
        return (images[:, 0] - images[:, 2]).mean().item()

    assert redness("retina fundus photograph") > redness("immunohistochemistry stained tissue") + 0.08
