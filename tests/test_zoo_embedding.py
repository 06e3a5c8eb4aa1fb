"""Embedding-conditioned generation on the zoo models: conditioning works, large images have no seams,
and text steers the embedding grid toward the named source."""

import re

import pytest
import torch
import torch.nn.functional as F

from gen import zoo
from gen.pipelines import LargeImagePipeline, TextToLargeImagePipeline
from gen.analysis import fidelity
from gen.core.tiling import tile_starts
from gen.data.tissue import random_patches, reference_image

pytestmark = pytest.mark.slow


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


def test_large_image_has_no_seams(patches):
    large = LargeImagePipeline.from_pipe(patches)
    reference = reference_image("retina")[None, :, 400:560, 300:492]  # the scale the model was trained at
    out = large(reference=reference, overlap=8, num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (1, 3, 160, 192) and out.grid.shape == (len(tile_starts(160, 32, 24)), len(tile_starts(192, 32, 24)), 64)  # one cell per tile
    assert fidelity.seam_strength(out.images, 32, 24) <= 1.1
    unblended = large(reference=reference, overlap=0, num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert fidelity.seam_strength(unblended.images, 32, 24) > 1.1  # the measure sees seams where tiles do not overlap


@pytest.fixture(scope="module")
def text(patches):
    return TextToLargeImagePipeline(zoo.load("ihc-text-grid"), LargeImagePipeline.from_pipe(patches))


def test_text_steers_the_grid_toward_the_named_source(patches, text):
    g = torch.Generator().manual_seed(0)
    reference = torch.cat([patches.embed(random_patches("ihc", 200, 32, g)), patches.embed(random_patches("retina", 200, 32, g))])
    is_retina = torch.tensor([0.0] * 200 + [1.0] * 200)

    def retina_share(prompt):
        """Fraction of generated grid cells whose nearest real patch embedding is a retina patch."""
        grids = text.grid_pipe(
            prompt,
            num_images_per_prompt=4,
            guidance_scale=2.0,
            num_inference_steps=20,
            height=8,
            width=8,
            generator=torch.Generator().manual_seed(1),
            output_type="latent",
        ).images
        cells = grids.permute(0, 2, 3, 1).reshape(-1, grids.shape[1])
        return is_retina[torch.cdist(cells, reference).argmin(1)].mean().item()

    assert retina_share("retina fundus photograph") > retina_share("immunohistochemistry stained tissue") + 0.4
    out = text(
        "retina fundus photograph", grid_size=4, grid_steps=10, num_inference_steps=4, overlap=8, output_type="pt", generator=torch.Generator().manual_seed(2)
    )
    assert out.images.shape == (1, 3, 128, 128) and out.grid.shape == (4, 4, 64)


def test_the_whole_fundus_prompt_draws_the_black_surround_every_time_and_crop_captions_do_not(patches, text):
    """Issue 31: "retina fundus photograph" names the whole photograph, so every sampled grid's corners are the
    black surround (corner-cell cosine to a black patch's embedding > 0.8), on 3 seeds; the crop caption's are not."""
    black = patches.embed(torch.zeros(1, 3, 32, 32))[0]

    def corner_cosines(prompt, seed):
        grids = text.grid_pipe(
            [prompt] * 8, guidance_scale=4.0, num_inference_steps=25, height=8, width=8, generator=torch.Generator().manual_seed(seed), output_type="latent"
        ).images.float()
        corners = grids[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
        return F.cosine_similarity(corners, black[None, :, None], dim=1).mean(dim=1)

    for seed in (0, 1, 2):
        assert (corner_cosines("retina fundus photograph", seed) > 0.8).all(), seed
        assert (corner_cosines("retinal image with blood vessels", seed) < 0.8).float().mean() >= 0.75, seed


def test_text_to_large_image_takes_the_named_sources_colour(text):
    """Retina photographs are red, IHC slides brown and blue: the final images must differ the same way."""

    def redness(prompt):
        images = torch.cat(
            [
                text(
                    prompt,
                    grid_size=4,
                    grid_steps=10,
                    num_inference_steps=10,
                    guidance_scale=4.0,
                    overlap=8,
                    output_type="pt",
                    generator=torch.Generator().manual_seed(seed),
                ).images
                for seed in (2, 3)
            ]
        )
        return (images[:, 0] - images[:, 2]).mean().item()

    assert redness("retina fundus photograph") > redness("immunohistochemistry stained tissue") + 0.08


def shuffled_grid(grid: torch.Tensor, seed: int) -> torch.Tensor:
    flat = grid.reshape(-1, grid.shape[-1])
    return flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))].reshape(grid.shape)


# A 192x192 corner of the 512x512 retina: black background, the fundus rim, vessels. Measured there at 10 steps
# (seeds 0-2, the v-prediction / zero-terminal-SNR model, guidance 2, the reference embedded at every tile
# position): patch cosine 0.84-0.85 from the crop's own embeddings (0.80-0.82 when tiles mixed the embeddings of
# non-overlapping cells), 0.32-0.36 from them shuffled; background gap 0.04-0.05 vs 0.39-0.50 (the epsilon model
# it replaced: 0.22-0.25, its black came out grey). Frangi vesselness correlation stays near 0.1 from its own
# embeddings (0.10-0.11 at 20 steps, seeds 0-1) and was -0.04-0.05 from a shuffled grid: the zoo model does not put
# vessels back, so no test of that measure could fail on a shuffled grid, and there is none
# (benchmarks/large_image_fidelity.py reports it).
CROP = (slice(None), slice(None), slice(160, 352), slice(0, 192))
STEPS = 10
PATCH_COSINE_MARGIN = 0.75
BACKGROUND_GAP_MARGIN = 0.15
TEXT_ATTRIBUTION_MARGIN = 0.75


@pytest.fixture(scope="module")
def regenerated(patches):
    """For three seeds: the measures of the crop regenerated from its own embeddings (one per tile), from them
    shuffled, and from non-overlapping cells that tiles interpolate between."""
    large = LargeImagePipeline.from_pipe(patches)
    reference = reference_image("retina", 512)[None][CROP]
    cells = large.embed_grid(reference)  # non-overlapping 32-px cells: what the output's patches are compared with
    per_tile = large.embed_grid(reference, stride=24)  # the pipeline's default at overlap 8: one cell per tile
    size = dict(height=reference.shape[2], width=reference.shape[3], overlap=8, num_inference_steps=STEPS, output_type="pt")
    rows = []
    for seed in (0, 1, 2):
        own = large(reference=reference, generator=torch.Generator().manual_seed(seed), **size).images
        shuffled = large(embedding_grid=shuffled_grid(per_tile, seed), grid_stride=24, generator=torch.Generator().manual_seed(seed), **size).images
        between_cells = large(reference=reference, grid_stride=32, generator=torch.Generator().manual_seed(seed), **size).images
        rows.append(
            {
                kind: {"cosine": fidelity.patch_cosine(large.embedder, out, cells).mean().item(), "background": fidelity.background_gap(reference, out)}
                for kind, out in (("own", own), ("shuffled", shuffled), ("between_cells", between_cells))
            }
        )
    return rows


@pytest.mark.parametrize(
    "measure, passes",
    [
        ("cosine", lambda v: v >= PATCH_COSINE_MARGIN),
        ("background", lambda v: v <= BACKGROUND_GAP_MARGIN),
    ],
)
def test_a_regenerated_image_looks_like_its_reference_and_a_shuffled_grid_does_not(regenerated, measure, passes):
    own = [row["own"][measure] for row in regenerated]
    shuffled = [row["shuffled"][measure] for row in regenerated]
    assert all(passes(v) for v in own), (measure, own)
    assert not any(passes(v) for v in shuffled), (measure, shuffled)


# Each tile conditioned on its own crop's embedding vs on a slerp of the non-overlapping cells around it (the
# earlier default): measured 0.84-0.85 vs 0.80-0.82 on this crop, a paired gain of 0.029-0.046 per seed.
PER_TILE_GAIN_MARGIN = 0.015


def test_conditioning_each_tile_on_its_own_crop_beats_interpolating_between_cells(regenerated):
    gains = [row["own"]["cosine"] - row["between_cells"]["cosine"] for row in regenerated]
    assert all(gain >= PER_TILE_GAIN_MARGIN for gain in gains), gains


@pytest.fixture(scope="module")
def source_index(patches):
    """Embeddings of real patches of both images at every size the model was trained at, and their source."""
    from gen.data.tissue import multiscale_patches

    crops, names = multiscale_patches(800, 32, torch.Generator().manual_seed(11))
    return patches.embed(crops), torch.tensor([name == "retina" for name in names])


def attributed_to_retina(patches, source_index, images: torch.Tensor) -> torch.Tensor:
    """For every 32-px patch of the images: is its nearest real patch (in the encoder's space) a retina patch?"""
    return fidelity.nearest_source(patches.embedder, images, *source_index)


def test_text_to_large_images_are_told_apart_by_their_source(patches, text, source_index):
    prompts = ["retina fundus photograph", "immunohistochemistry stained tissue"]
    outs = [
        text(prompts, grid_size=4, grid_steps=20, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(seed), output_type="pt") for seed in (3, 4)
    ]

    def accuracy(retina_images, ihc_images):
        return (
            (
                attributed_to_retina(patches, source_index, retina_images).float().mean()
                + (~attributed_to_retina(patches, source_index, ihc_images)).float().mean()
            )
            / 2
        ).item()

    told_apart = accuracy(torch.cat([out.images[:1] for out in outs]), torch.cat([out.images[1:] for out in outs]))
    assert told_apart >= TEXT_ATTRIBUTION_MARGIN, told_apart

    # Mutation: each image's cells drawn from both prompts' grids, so its text no longer decides them.
    mixed = []
    for seed, out in enumerate(outs):
        cells = shuffled_grid(out.grid.reshape(1, -1, out.grid.shape[-1]), seed)[0, :16].reshape(4, 4, -1)
        mixed.append(text.image_pipe(embedding_grid=cells, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(seed), output_type="pt").images)
    assert accuracy(mixed[0], mixed[1]) < TEXT_ATTRIBUTION_MARGIN


def test_the_quick_demo_writes_the_side_by_side_and_the_fidelity_figures(tmp_path):
    from gen.demo import run_demo

    run_demo(tmp_path, quick=True)
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "large_reference_vs_regenerated.png").is_file()
    for heading in ("re-embedded patch cosine", "background brightness gap", "Frangi vesselness correlation", "seam strength"):
        assert heading in report, heading
    # every section states its claim with the evidence: a verdict over seeds with the paired interval
    claims = [line for line in report.splitlines() if line.startswith("Claim: ")]
    assert len(claims) >= 6, claims
    assert all(
        re.search(r"\*\*(holds here|does not hold here|not shown here)", line) and "95% interval" in line for line in claims if "paired difference" in line
    )
    assert sum("paired difference over seeds [0, 1, 2]" in line for line in claims) >= 5
    assert re.search(r"\d\.\d{3} \(\d\.\d{3} to \d\.\d{3}\)", report), "numbers come with their intervals"
