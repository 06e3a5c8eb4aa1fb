"""Image files as gen reads them: the same files and the same decoding as the `datasets` library's
"imagefolder" builder (which the trainer reads folders with), so a check made here holds for training; and
pixel values from the image's own bit depth, so a 16-bit PNG is not read as white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from gen.errors import ArgumentError, MissingFileError


def image_suffixes() -> frozenset[str]:
    """The file suffixes datasets' imagefolder reads as images."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return frozenset(ImageFolder.EXTENSIONS)


def image_files(root: Path) -> list[Path]:
    """The images datasets' imagefolder finds under root: by suffix (any case), skipping hidden files and
    folders and those starting with "__", as its data-file resolution does."""
    suffixes = image_suffixes()
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and not any(part.startswith((".", "__")) for part in p.relative_to(root).parts)
    )


def decode(path: Path, name: str = "data") -> PIL.Image.Image:
    """Open and decode one image file as datasets' `Image` feature does (open, load, EXIF orientation),
    refusing, with the file named, what cannot be decoded or is too large to decode safely."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
            image.load()
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
        raise ArgumentError(
            f"{name}: {path} has more than {PIL.Image.MAX_IMAGE_PIXELS:,} pixels, more than PIL decodes without a decompression-bomb "
            "warning; shrink it first (training resizes every image to --resolution anyway)."
        ) from None
    except Exception as err:  # noqa: BLE001  (PIL raises many types for a damaged file; each is the file's fault)
        raise ArgumentError(
            f"{name}: {path} is not a readable image ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'damaged'}); " "remove or fix it."
        ) from None
    if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
        image = PIL.ImageOps.exif_transpose(image)
    return image


def is_high_depth(image: PIL.Image.Image) -> bool:
    """Modes PIL's convert("RGB"/"L") would clip (16- and 32-bit integers, floats)."""
    return image.mode in _HIGH_DEPTH or image.mode in ("I", "F")


_HIGH_DEPTH = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def to_unit_array(image: PIL.Image.Image, channels: int = 3) -> np.ndarray:
    """A PIL image as float32 (H, W, channels) in [0, 1], scaled by its own bit depth: 8-bit modes by 255,
    16-bit greyscale by 65535, 32-bit integer ("I") by 65535 when its values fit 16 bits (PIL opens 16-bit
    PNGs so) else by its maximum, floats ("F") as they are (clipped). PIL's own convert("RGB") clips every
    such image to white."""
    if is_high_depth(image):
        values = np.asarray(image, dtype=np.float32)
        if image.mode in _HIGH_DEPTH:
            values = values / _HIGH_DEPTH[image.mode]
        elif image.mode == "I":
            top = float(values.max()) if values.size else 1.0
            values = values / (65535.0 if top <= 65535 else top)
        values = np.clip(values, 0.0, 1.0)[..., None]
        return values if channels == 1 else np.repeat(values, channels, axis=2)
    converted = image.convert("L" if channels == 1 else "RGB")
    values = np.asarray(converted, dtype=np.float32) / 255.0
    return values[..., None] if values.ndim == 2 else values


def read_image(path, name: str = "image", channels: int = 3) -> np.ndarray:
    """An image file as float32 (H, W, channels) in [0, 1] (see `decode`, `to_unit_array`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{name}: no image file at {path}.")
    return to_unit_array(decode(path, name), channels)
