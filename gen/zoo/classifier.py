"""`DigitClassifier`: the zoo's small CNN on 16x16 digits. Its log-probabilities are a reward; its
penultimate features are gen's offline metric space (see gen.analysis.metrics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from gen.errors import ArgumentError


class DigitClassifier(ModelMixin, ConfigMixin):
    """Images in [0, 1], (B, C, H, W) -> class logits. RGB input is averaged to gray and any size is resized
    to the training resolution, so decoded samples of any pipeline can be scored."""

    @register_to_config
    def __init__(self, in_channels: int = 1, resolution: int = 16, num_classes: int = 10, width: int = 32, feature_dim: int = 64):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * w * (resolution // 4) ** 2, feature_dim),
            nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ArgumentError(f"images: expected (batch, channels, height, width), got {tuple(images.shape)}.")
        images = images.to(self.device, self.dtype)
        if images.shape[1] != self.config.in_channels:
            images = images.mean(dim=1, keepdim=True)
        size = self.config.resolution
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate activations: gen's offline metric space for digits."""
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        return self(images).log_softmax(dim=-1)
