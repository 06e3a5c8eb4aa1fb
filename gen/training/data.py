"""Training data: an image folder (with an optional metadata.jsonl of labels or captions) or a bundled
source that ships inside a package (`gen.data`), by name. Every example is a dict with ``pixel_values`` in [-1, 1] (C, H, W)
and, depending on the source, ``label`` (int), ``caption`` (str) or ``condition_image`` (the image an
embedding condition is computed from).

Image folder layout (the HF "imagefolder" convention):
    data/
      0001.png ...
      metadata.jsonl     {"file_name": "0001.png", "label": 3}  or  {"file_name": "0001.png", "text": "..."}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gen.data import TensorImageDataset, digits, digits_bold, embedding_grids, ihc_patches
from gen.data.dataset import to_unit_range
from gen.data.tissue import GRID

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# -- bundled sources ------------------------------------------------------------------------------------------------
def ihc_grids(resolution: int = GRID, embedder: str = "zoo:patch-encoder", count: int = 4000, seed: int = 0) -> TensorImageDataset:
    """Embedding grids as (D, grid, grid) "images"; patch-encoder elements are O(1), so train with --no-clip-sample."""
    from gen.embedders import load_embedder

    grids, captions = embedding_grids(load_embedder(embedder), count, resolution, seed=seed)
    return TensorImageDataset(grids, captions=captions)


SOURCES: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "digits-bold": digits_bold,
    "ihc-patches": ihc_patches,
    "ihc-grids": ihc_grids,
}


def register_source(name: str, build: Callable[..., Dataset]) -> None:
    """Make a bundled source available to the trainer as --data NAME."""
    SOURCES[name] = build


# -- image folders --------------------------------------------------------------------------------------------------
class ImageFolderDataset(Dataset):
    """Images from a folder (recursively), resized and centre-cropped to resolution, with labels or captions
    from metadata.jsonl when present."""

    def __init__(self, root: str | Path, resolution: int, channels: int = 3, name: str = "data"):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{name}: {root} is not a folder; pass a folder of images or a bundled source ({sorted(SOURCES)}).")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"{name}: {root} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        self.resolution, self.channels = resolution, channels
        meta = {}
        meta_file = root / "metadata.jsonl"
        if meta_file.exists():
            for line_number, line in enumerate(meta_file.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    meta[row["file_name"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{name}: {meta_file} line {line_number} is not a JSON object with a file_name.") from None
        rows = [meta.get(str(p.relative_to(root))) or meta.get(p.name) for p in self.files]
        self.labels = [int(r["label"]) for r in rows] if rows and all(r and "label" in r for r in rows) else None
        self.captions = [str(r["text"]) for r in rows] if rows and all(r and "text" in r for r in rows) else None
        if meta and self.labels is None and self.captions is None:
            raise ValueError(f"{name}: {meta_file} must give every image a 'label' or a 'text'.")

    @property
    def num_classes(self) -> int | None:
        return max(self.labels) + 1 if self.labels else None

    class_names = None

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            image = image.convert("L" if self.channels == 1 else "RGB")
            w, h = image.size
            side = min(w, h)
            image = image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            image = image.resize((self.resolution, self.resolution), Image.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array)
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return to_unit_range(tensor)

    def __getitem__(self, i: int) -> dict:
        item = {"pixel_values": self.load(self.files[i]), "index": i}
        if self.labels is not None:
            item["label"] = self.labels[i]
        if self.captions is not None:
            item["caption"] = self.captions[i]
        return item


def load_data(spec: str, resolution: int, channels: int, name: str = "data") -> Dataset:
    """A bundled source by name, or an image folder by path."""
    if spec in SOURCES:
        return SOURCES[spec](resolution=resolution)
    return ImageFolderDataset(spec, resolution, channels, name=name)


class CorruptedConditions(Dataset):
    """A dataset whose conditions are synthetically corrupted once, for studies: a fraction of labels
    flipped to another class, or of captions / condition images swapped between examples."""

    def __init__(self, base: Dataset, rate: float, num_classes: int | None, seed: int = 0):
        from gen.conditioning import corrupt_labels, corrupt_pairs

        self.base, self.rate = base, rate
        n = len(base)
        self.flipped_labels = None
        self.source_of = list(range(n))
        labels = getattr(base, "labels", None)
        if labels is None and "label" in base[0]:
            labels = [base[i]["label"] for i in range(n)]
        if labels is not None:
            labels = torch.as_tensor(labels)
            self.flipped_labels = corrupt_labels(labels, rate, num_classes, seed)
        else:
            self.source_of = corrupt_pairs(n, rate, seed)

    def __getattr__(self, name):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        if self.flipped_labels is not None:
            item["label"] = int(self.flipped_labels[i])
        elif self.source_of[i] != i:
            donor = self.base[self.source_of[i]]
            for key in ("caption", "condition_image", "embedding"):
                if key in donor:
                    item[key] = donor[key]
        return item

