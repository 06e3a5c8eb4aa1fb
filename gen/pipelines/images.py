"""Image inputs, as diffusers pipelines take them (`PipelineImageInput`: PIL images, numpy arrays, torch
tensors, or lists of them), to one float tensor (B, C, H, W) in [0, 1].

Value ranges are read from the data type, as a careful user would expect: uint8 is 0-255, uint16 is
0-65535, floats are [0, 1]; a float tensor or array with negative values is taken as [-1, 1] (diffusers'
`VaeImageProcessor` convention, with its deprecation warning). Floats above 1 are refused rather than
guessed. Layout and batching are diffusers' (`VaeImageProcessor.preprocess`, without resizing).
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from gen.errors import ArgumentError, ArgumentTypeError

_INTEGER_RANGES = {np.dtype("uint8"): 255.0, np.dtype("uint16"): 65535.0, torch.uint8: 255.0, torch.int16: None, torch.int32: None, torch.int64: None}


def _to_float(item, name: str):
    """One array or tensor scaled to floats; PIL images pass through."""
    if isinstance(item, PIL.Image.Image):
        return item
    if isinstance(item, np.ndarray):
        if item.dtype in _INTEGER_RANGES:
            return item.astype(np.float32) / _INTEGER_RANGES[item.dtype]
        if not np.issubdtype(item.dtype, np.floating):
            raise ArgumentTypeError(f"{name}: numpy images must be uint8, uint16 or float, got {item.dtype}.")
        return item.astype(np.float32)
    if isinstance(item, torch.Tensor):
        if item.dtype == torch.uint8:
            return item.float() / 255.0
        if not item.is_floating_point():
            raise ArgumentTypeError(f"{name}: tensor images must be uint8 or float, got {item.dtype}.")
        return item.float()
    raise ArgumentTypeError(f"{name}: expected PIL images, numpy arrays or torch tensors (or a list of them), got {type(item).__name__}.")


def to_unit_tensor(images, name: str = "images") -> torch.Tensor:
    """images -> float32 (B, C, H, W) in [0, 1] on the CPU; errors name `name`."""
    from diffusers.image_processor import VaeImageProcessor

    items = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ArgumentError(f"{name}: got an empty list; pass at least one image.")
    items = [_to_float(item, name) for item in items]
    for item in items:
        if isinstance(item, (np.ndarray, torch.Tensor)):
            values = torch.as_tensor(item)
            if values.numel() == 0 or not torch.isfinite(values).all():
                raise ArgumentError(f"{name}: images must be non-empty and finite (no NaN or infinity).")
            if values.max() > 1.0 + 1e-6:
                raise ArgumentError(
                    f"{name}: float images must lie in [0, 1] (or [-1, 1]), got values up to {float(values.max()):.4g}; pass uint8 data or divide by 255."
                )
    if isinstance(items[0], np.ndarray) and items[0].ndim == 3 and items[0].shape[-1] not in (1, 3, 4) and items[0].shape[0] in (1, 3, 4):
        raise ArgumentError(f"{name}: numpy images are (H, W, C) or (B, H, W, C), got shape {items[0].shape}; move the channel axis last.")
    processor = VaeImageProcessor(do_resize=False, do_normalize=False)
    try:
        tensor = processor.preprocess(items if len(items) > 1 else items[0])
    except (ValueError, RuntimeError, TypeError) as err:
        raise ArgumentError(f"{name}: {err}") from None
    if tensor.ndim != 4:
        raise ArgumentError(f"{name}: expected images of shape (H, W, C) or (B, C, H, W), got {tuple(tensor.shape)}.")
    tensor = tensor.float()
    if tensor.min() < 0:  # a [-1, 1] image, as VaeImageProcessor reads negative values
        tensor = (tensor + 1) / 2
    return tensor.clamp(0, 1)
