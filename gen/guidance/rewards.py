"""Rewards: batched callables on images in [0, 1], (B, C, H, W) -> (B,) float tensor. No gradient is ever
taken, so a reward may be anything computable: a JPEG encoder, a classifier, a black-box score.

    >>> reward = classifier_log_prob(gen.zoo.load("digits-classifier"), target=3)
    >>> reward(images)          # tensor of shape (B,)
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
from PIL import Image

from gen.errors import ArgumentError, ArgumentTypeError

Reward = Callable[[torch.Tensor], torch.Tensor]


def check_reward_values(values, batch: int, name: str = "reward", where: str = "") -> torch.Tensor:
    """The reward's output as a float32 CPU tensor of shape (batch,) (selection and resampling run on the CPU,
    whatever device the reward or value net ran on); a clear error otherwise."""
    at = f" {where}" if where else ""
    if not isinstance(values, torch.Tensor):
        raise ArgumentTypeError(f"{name}: must return a torch.Tensor of shape ({batch},){at}, got {type(values).__name__}.")
    if values.shape != (batch,):
        raise ArgumentError(f"{name}: must return shape ({batch},) for {batch} images{at}, got {tuple(values.shape)}.")
    values = values.detach().float().cpu()
    if not torch.isfinite(values).all():
        bad = torch.nonzero(~torch.isfinite(values)).flatten().tolist()
        raise ArgumentError(f"{name}: returned NaN or infinite values{at} (rows {bad[:8]}).")
    return values


def jpeg_compressibility(quality: int = 95) -> Reward:
    """Negative JPEG size in kilobytes (the SVDD paper's compressibility reward). Non-differentiable."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ArgumentError(f"quality: must be an integer in [1, 100] (PIL's JPEG quality), got {quality!r}.")

    def reward(images: torch.Tensor) -> torch.Tensor:
        array = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        sizes = []
        for image in array:
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            buffer = io.BytesIO()
            pil.save(buffer, format="JPEG", quality=quality)
            sizes.append(buffer.tell() / 1000.0)
        return -torch.tensor(np.asarray(sizes), dtype=torch.float32)

    reward.__name__ = f"jpeg_compressibility(quality={quality})"
    return reward


def classifier_log_prob(classifier, target: int | torch.Tensor) -> Reward:
    """log p(target | image) under a classifier with `log_probs(images)` (or logits from `__call__`).
    `target` is one class for all images, or one per image; classes are checked against the classifier's
    (its config's num_classes where it has one, else the width of its output)."""
    if not callable(classifier):
        raise ArgumentTypeError(f"classifier: expected a model returning class scores, got {type(classifier).__name__}.")
    try:
        targets = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(f"target: expected an integer class or a list of them, got {target!r}.") from None
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.ndim > 1 or targets.numel() == 0:
        raise ArgumentError(f"target: expected an integer class or a 1-d list of them, got {target!r}.")
    targets = targets.long()
    num_classes = getattr(getattr(classifier, "config", None), "num_classes", None)

    def check_range(n: int) -> None:
        if targets.min() < 0 or targets.max() >= n:
            raise ArgumentError(f"target: classes must lie in [0, {n}) for this classifier, got {targets.tolist()}.")

    if num_classes is not None:
        check_range(num_classes)

    @torch.no_grad()
    def reward(images: torch.Tensor) -> torch.Tensor:
        scores = classifier.log_probs(images) if hasattr(classifier, "log_probs") else classifier(images).log_softmax(-1)
        check_range(scores.shape[-1])
        wanted = targets.to(scores.device)
        if wanted.ndim == 0:
            return scores[:, wanted].float().cpu()
        if len(wanted) != len(scores):
            raise ArgumentError(f"target: {len(wanted)} targets for {len(scores)} images; give one class, or one per image.")
        return scores.gather(1, wanted[:, None])[:, 0].float().cpu()

    reward.__name__ = "classifier_log_prob"
    return reward


def embedding_similarity(embedder, target: torch.Tensor) -> Reward:
    """Cosine similarity between each image's embedding (gen.embedders) and a target embedding (D,) or (B, D)."""
    target = torch.as_tensor(target).float()

    @torch.no_grad()
    def reward(images: torch.Tensor) -> torch.Tensor:
        emb = embedder.embed_images(images).float().cpu()
        goal = target if target.ndim == 2 else target[None]
        if goal.shape[-1] != emb.shape[-1]:
            raise ArgumentError(f"target: width {goal.shape[-1]} does not match the embedder's {emb.shape[-1]}.")
        return torch.nn.functional.cosine_similarity(emb, goal.expand_as(emb), dim=-1)

    reward.__name__ = "embedding_similarity"
    return reward
