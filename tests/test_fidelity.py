"""The large-image fidelity measures (gen.analysis.fidelity) respond to what they claim to measure."""

import pytest
import torch
import torch.nn.functional as F

from gen.analysis import fidelity
from gen.data.tissue import reference_image
from gen.errors import ArgumentError


@pytest.fixture(scope="module")
def retina():
    return reference_image("retina", 256)[None]


class CellMean:
    """A stand-in embedder whose embedding of a patch is its mean colour: cosine tells colours apart."""

    def embed_images(self, patches):
        return patches.mean(dim=(2, 3)) - 0.5


def test_patch_cosine_is_one_on_the_grid_the_image_gives_and_lower_on_a_shuffled_one(retina):
    cells = fidelity.grid_patches(retina, 32)
    grid = CellMean().embed_images(cells).reshape(8, 8, 3)
    shuffled = grid.reshape(64, 3)[torch.randperm(64, generator=torch.Generator().manual_seed(0))].reshape(8, 8, 3)
    assert fidelity.patch_cosine(CellMean(), retina, grid).min() > 0.999
    assert fidelity.patch_cosine(CellMean(), retina, shuffled).mean() < 0.9


def test_background_gap_measures_brightness_added_on_black_background(retina):
    assert fidelity.background_gap(retina, retina) == pytest.approx(0.0, abs=1e-6)
    lifted = torch.where(fidelity.background_mask(retina), retina + 0.3, retina).clamp(0, 1)
    assert fidelity.background_gap(retina, lifted) == pytest.approx(0.3, abs=0.01)
    assert fidelity.background_gap(torch.ones(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)) is None  # no black pixels: nothing to measure


def test_vesselness_correlation_is_high_for_the_same_vessels_and_low_for_moved_ones(retina):
    noisy = (retina + 0.02 * torch.randn(retina.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    moved = torch.roll(retina, shifts=(37, 53), dims=(2, 3))
    same = fidelity.vesselness_correlation(retina, noisy)
    other = fidelity.vesselness_correlation(retina, moved)
    assert same > 0.6 and other < 0.2 and same > other + 0.4, (same, other)


def test_seam_strength_is_near_one_without_seams_and_large_with_them(retina):
    assert fidelity.seam_strength(retina, 32, 24) < 1.1
    offsets = torch.rand(1, 3, 11, 11, generator=torch.Generator().manual_seed(0)) * 0.3
    blocky = (retina + F.interpolate(offsets, scale_factor=24, mode="nearest")[..., :256, :256]).clamp(0, 1)  # a step at every tile border
    assert fidelity.seam_strength(blocky, 32, 24) > 1.5


def test_patch_frechet_is_smaller_for_the_same_image_than_for_another(retina):
    features = lambda patches: torch.cat([patches.mean(dim=(2, 3)), patches.std(dim=(2, 3))], 1)
    ihc = reference_image("ihc", 256)[None]
    assert fidelity.patch_frechet(features, retina, retina) < 1e-3
    assert fidelity.patch_frechet(features, retina, ihc) > 0.05


def test_measures_refuse_images_of_the_wrong_shape(retina):
    with pytest.raises(ArgumentError, match="reference: expected a \\(1, 3, H, W\\) tensor"):
        fidelity.background_gap(retina[0], retina)
    with pytest.raises(ArgumentError, match="image: .* is not the grid 5x5"):
        fidelity.patch_cosine(CellMean(), retina, torch.zeros(5, 5, 3))
