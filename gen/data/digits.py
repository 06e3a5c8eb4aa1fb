"""scikit-learn's handwritten digits, as training data and as the reference set of the digits metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gen.errors import ArgumentError
from gen.data.dataset import TensorImageDataset, resize, to_unit_range

SPLITS = ("train", "test", "all")


def digits(resolution: int = 16, split: str = "train") -> TensorImageDataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), upsampled to resolution, one channel.
    Every fifth image is held out (split="test", 360 images); split="all" takes all."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ArgumentError(f"split: one of {SPLITS}, got {split!r}.")
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    index = torch.arange(len(images))
    keep = {"train": index % 5 != 0, "test": index % 5 == 0, "all": index >= 0}[split]
    return TensorImageDataset(to_unit_range(resize(images[keep], resolution)), labels=labels[keep], class_names=[str(d) for d in range(10)])


def digits_bold(resolution: int = 16, split: str = "train") -> TensorImageDataset:
    """The digits with strokes dilated by one pixel (3x3 max filter): the style a LoRA learns."""
    data = digits(resolution, split)
    bold = F.max_pool2d((data.images + 1) / 2, kernel_size=3, stride=1, padding=1)
    return TensorImageDataset(to_unit_range(bold), labels=data.labels, class_names=data.class_names)


def digit_tokens(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits as token sequences: (N, 64) intensities in [0, 16] (scikit-learn's own levels, row by row)
    and (N,) labels; the same split as `digits`."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ArgumentError(f"split: one of {SPLITS}, got {split!r}.")
    data = load_digits()
    tokens = torch.tensor(data.images, dtype=torch.long).flatten(1)
    labels = torch.tensor(data.target, dtype=torch.long)
    index = torch.arange(len(tokens))
    keep = {"train": index % 5 != 0, "test": index % 5 == 0, "all": index >= 0}[split]
    return tokens[keep], labels[keep]
