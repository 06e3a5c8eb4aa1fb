"""The retrieval-ceiling benchmark's mosaic must never copy a cell from itself (that would bound nothing)."""

import torch

from benchmarks.retrieval_ceiling import BANK_STRIDE, PATCH, crops, mosaic, nearest, overlapping


def test_nearest_crop_skips_every_crop_overlapping_the_cell_and_finds_an_exact_repeat():
    torch.manual_seed(0)
    motif = torch.rand(1, 3, PATCH, PATCH)
    image = motif.repeat(1, 1, 3, 3)  # every cell has exact copies elsewhere
    bank, corners = crops(image, PATCH, BANK_STRIDE)
    cells, cell_corners = crops(image, PATCH, PATCH)
    chosen = nearest(cells.flatten(1), bank.flatten(1), overlapping(cell_corners, corners), "l2")
    offsets = (corners[chosen] - cell_corners).abs()
    assert (offsets >= PATCH).any(dim=-1).all()  # no chosen crop overlaps its own cell
    assert torch.equal(mosaic(image, chosen, bank), image)  # and a copy elsewhere is found
    assert not torch.equal(mosaic(image, torch.zeros_like(chosen) + 1, bank), image)  # a wrong choice shows
