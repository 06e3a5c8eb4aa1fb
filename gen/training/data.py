"""Training data: an image folder (read by the `datasets` library's imagefolder builder) or a bundled
source that ships inside a package (`gen.data`), by name. Every example is a dict with ``pixel_values`` in [-1, 1] (C, H, W)
and, depending on the source, ``label`` (int), ``caption`` (str) or ``condition_image`` (the image an
embedding condition is computed from).

Image folder layouts (the HF "imagefolder" conventions):
    data/
      0001.png ...
      metadata.jsonl     {"file_name": "0001.png", "label": 3}  or  {"file_name": "0001.png", "text": "..."}
    or metadata.csv with the same columns, or class subfolders: data/cat/1.png, data/dog/2.png (labels
    0 and 1, in sorted order). The caption column's name is --caption-column (default "text").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gen.errors import ArgumentError, MissingFileError
from gen.data import TensorImageDataset, digits, digits_bold, embedding_grids, ihc_patches
from gen.data.dataset import to_unit_range
from gen.data.files import decode, image_files, is_high_depth, to_unit_array
from gen.data.tissue import GRID


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
    """Images from a folder, read by the `datasets` library's "imagefolder" builder: labels or captions from
    metadata.jsonl or metadata.csv (columns ``file_name`` and ``label`` or the caption column), or else class
    labels from class subfolders (``root/cat/1.png`` -> class "cat", classes in sorted order); resized and
    centre-cropped to resolution.

    The folder is checked before training starts, with errors that name the file or the metadata line:
    every file the datasets library will read as an image must decode as it will decode it
    (`gen.data.files`), every metadata row name a distinct image, every label be an integer >= 0 and every
    caption a non-empty string. 16-bit images keep their depth (PIL alone reads them as white)."""

    def __init__(
        self,
        root: str | Path,
        resolution: int,
        channels: int = 3,
        name: str = "data",
        caption_column: str = "text",
        center_crop: bool = True,
        random_flip: bool = False,
        seed: int = 0,
    ):
        root = Path(root)
        if not root.is_dir():
            raise MissingFileError(f"{name}: {root} is not a folder; pass a folder of images or a bundled source ({sorted(SOURCES)}).")
        files = image_files(root)
        if not files:
            raise ArgumentError(f"{name}: {root} holds no images (.png, .jpg, .webp, .gif, ... as the datasets library reads them).")
        for path in files:
            decode(path, name).close()
        meta = _read_metadata(root, name)
        rows = [meta.get(str(p.relative_to(root))) or meta.get(p.name) for p in files]
        if meta and not all(r and ("label" in r or caption_column in r) for r in rows):
            raise ArgumentError(f"{name}: the metadata in {root} must give every image a 'label' or a '{caption_column}' (caption_column).")
        for row in rows:
            if row and "label" in row:
                _label(row["label"], row, name)
            if row and caption_column in row and (not isinstance(row[caption_column], str) or not row[caption_column].strip()):
                raise ArgumentError(
                    f"{name}: the {caption_column!r} of {row.get('file_name')} is {row[caption_column]!r}; every caption must be non-empty text "
                    "(an empty caption trains the unconditional row: use --condition-dropout for that)."
                )
        self.resolution, self.channels = resolution, channels
        self.center_crop, self.random_flip, self.seed, self.epoch = center_crop, random_flip, seed, 0
        self.images = _imagefolder(root, name)
        columns = self.images.column_names
        label_feature = self.images.features.get("label")
        self.class_names = list(label_feature.names) if getattr(label_feature, "names", None) and not meta else None
        self.labels = [int(v) for v in self.images["label"]] if "label" in columns else None
        self.captions = [str(v) for v in self.images[caption_column]] if caption_column in columns else None

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return max(self.labels) + 1 if self.labels else None

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose random crops and flips __getitem__ draws (the training loop sets it before each epoch)."""
        self.epoch = epoch

    def load(self, image: Image.Image) -> torch.Tensor:
        if is_high_depth(image):
            return self._load_high_depth(image)
        image = image.convert("L" if self.channels == 1 else "RGB")
        w, h = image.size
        side = min(w, h)
        image = image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        image = image.resize((self.resolution, self.resolution), Image.BICUBIC)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return to_unit_range(tensor)

    def _load_high_depth(self, image: Image.Image) -> torch.Tensor:
        """A 16/32-bit image: its values over its own depth, then the same centre crop and a bicubic resize."""
        values = torch.from_numpy(to_unit_array(image, self.channels)).permute(2, 0, 1)
        h, w = values.shape[1:]
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        values = values[:, top : top + side, left : left + side][None]
        values = torch.nn.functional.interpolate(values, size=(self.resolution, self.resolution), mode="bicubic", antialias=True, align_corners=False)
        return to_unit_range(values[0].clamp(0, 1))

    def draws(self, i: int) -> torch.Generator:
        """Example i's crop and flip randomness in this epoch: a pure function of (seed, epoch, i)."""
        return torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_033 + i) % 2**63)

    def crop_and_flip(self, image: Image.Image, i: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """diffusers' SDXL transforms: the short side resized to the resolution, a random crop, a flip with
        probability 1/2 (drawn from (seed, epoch, index): a resumed run repeats them); returns the image and the
        crop's top-left corner as `train_text_to_image_sdxl.py` records it (after a flip, resolution - left)."""
        g = self.draws(i)
        w, h = image.size
        scale = self.resolution / min(w, h)
        size = (max(self.resolution, round(w * scale)), max(self.resolution, round(h * scale)))
        if is_high_depth(image):
            values = torch.from_numpy(to_unit_array(image, self.channels)).permute(2, 0, 1)[None]
            values = torch.nn.functional.interpolate(values, size=size[::-1], mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
        else:
            image = image.convert("L" if self.channels == 1 else "RGB").resize(size, Image.BICUBIC)
            values = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
            values = values[None] if values.ndim == 2 else values.permute(2, 0, 1)
        top = int(torch.randint(0, size[1] - self.resolution + 1, (1,), generator=g))
        left = int(torch.randint(0, size[0] - self.resolution + 1, (1,), generator=g))
        values = values[:, top : top + self.resolution, left : left + self.resolution]
        if self.random_flip and torch.rand((), generator=g) < 0.5:
            values, left = values.flip(-1), self.resolution - left
        return to_unit_range(values), (top, left)

    def centre_crop_corner(self, image: Image.Image) -> tuple[int, int]:
        """Where the centre crop's top-left lies in the image resized to short side = resolution (`load` crops first,
        then resizes: the same square)."""
        w, h = image.size
        scale = self.resolution / min(w, h)
        return max(0, round((round(h * scale) - self.resolution) / 2)), max(0, round((round(w * scale) - self.resolution) / 2))

    def __getitem__(self, i: int) -> dict:
        image = self.images[i]["image"]
        if self.center_crop:
            pixels, corner = self.load(image), self.centre_crop_corner(image)
            if self.random_flip and torch.rand((), generator=self.draws(i)) < 0.5:
                pixels, corner = pixels.flip(-1), (corner[0], self.resolution - corner[1])
        else:
            pixels, corner = self.crop_and_flip(image, i)
        item = {"pixel_values": pixels, "index": i, "original_size": torch.tensor([image.size[1], image.size[0]]), "crop_top_left": torch.tensor(corner)}
        if self.labels is not None:
            item["label"] = self.labels[i]
        if self.captions is not None:
            item["caption"] = self.captions[i]
        return item


def _imagefolder(root: Path, name: str):
    """The folder through `datasets.load_dataset("imagefolder")` (its train split), quietly."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bar()
    try:
        return datasets.load_dataset("imagefolder", data_dir=str(root), split="train")
    except Exception as err:  # the checks above catch what they can name; this is what the library found
        raise ArgumentError(f"{name}: the datasets library cannot read {root} as an image folder ({type(err).__name__}: {str(err).splitlines()[0]}).") from None
    finally:
        if was_on:
            datasets.enable_progress_bar()


def _read_metadata(root: Path, name: str) -> dict[str, dict]:
    """metadata.jsonl or metadata.csv rows by file_name ({} when there is neither)."""
    import csv

    rows: dict[str, dict] = {}
    jsonl, table = root / "metadata.jsonl", root / "metadata.csv"
    if jsonl.exists():
        for number, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = row["file_name"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ArgumentError(f"{name}: {jsonl} line {number} is not a JSON object with a file_name.") from None
            if key in rows:
                raise ArgumentError(f"{name}: {jsonl} line {number} repeats file_name {key!r} (given earlier); give each image one row.")
            rows[key] = row
    elif table.exists():
        with open(table, newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):
                if not row.get("file_name"):
                    raise ArgumentError(f"{name}: {table} line {number} has no file_name.")
                if row["file_name"] in rows:
                    raise ArgumentError(f"{name}: {table} line {number} repeats file_name {row['file_name']!r} (given earlier); give each image one row.")
                rows[row["file_name"]] = row
    return rows


def _label(value, row: dict, name: str) -> int:
    try:
        label = int(value)
    except (TypeError, ValueError):
        label = -1
    if label < 0 or str(value).strip() not in (str(label), f"{label}.0"):
        raise ArgumentError(f"{name}: the label of {row.get('file_name')} is {value!r}; labels must be integers >= 0.")
    return label


def load_data(
    spec: str,
    resolution: int,
    channels: int,
    name: str = "data",
    caption_column: str = "text",
    center_crop: bool = True,
    random_flip: bool = False,
    seed: int = 0,
) -> Dataset:
    """A bundled source by name, or an image folder by path (`center_crop`, `random_flip`: see ImageFolderDataset)."""
    if spec in SOURCES:
        return SOURCES[spec](resolution=resolution)
    return ImageFolderDataset(spec, resolution, channels, name=name, caption_column=caption_column, center_crop=center_crop, random_flip=random_flip, seed=seed)


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
