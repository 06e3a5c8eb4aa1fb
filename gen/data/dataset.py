"""`TensorImageDataset`: examples held in memory, as the trainer reads them."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images (N, C, H, W) in [-1, 1] plus optional labels or captions. Every example is a dict with
    ``pixel_values``, ``index`` and, where given, ``label`` (int) or ``caption`` (str)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, captions: list[str] | None = None, class_names: list[str] | None = None):
        self.images, self.labels, self.captions = images, labels, captions
        self.class_names = class_names

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.labels is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"pixel_values": self.images[i], "index": i}
        if self.labels is not None:
            item["label"] = int(self.labels[i])
        if self.captions is not None:
            item["caption"] = self.captions[i]
        return item


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return images * 2 - 1


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
