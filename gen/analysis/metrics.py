"""Fidelity and diversity in an offline feature space.

These are *not* Inception FID or Inception-based scores: no Inception network exists offline here. The
feature space is the 64-d penultimate layer of the zoo's `digits-classifier` (or any model with a
``features(images)`` method), so the numbers compare runs within gen, on digits; they do not compare
with published FIDs.

- `frechet_distance(a, b)`: the Fréchet distance between Gaussians fitted to two feature sets,
  ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).
- `mean_pairwise_distance(f)`: the mean L2 distance between distinct samples (diversity).
- `coverage(real, fake, k)`: the fraction of real samples whose k-nearest-neighbour ball (among reals)
  holds at least one fake (Naeem et al. 2020); `per_class_coverage` computes it within each real class.
"""

from __future__ import annotations

import torch

from gen.errors import ArgumentError


class FeatureSpace:
    """Batched features and predictions of a classifier for images in [0, 1]."""

    def __init__(self, model, batch_size: int = 256):
        self.model, self.batch_size = model.eval(), batch_size

    @torch.no_grad()
    def _map(self, fn, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ArgumentError(f"images: expected (batch, channels, height, width) in [0, 1], got shape {tuple(images.shape)}.")
        return torch.cat([fn(images[i : i + self.batch_size]).float().cpu() for i in range(0, len(images), self.batch_size)])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._map(self.model.features, images)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self._map(self.model, images).argmax(-1)


def _check(features: torch.Tensor, name: str, minimum: int = 2) -> torch.Tensor:
    if features.ndim != 2 or len(features) < minimum:
        raise ArgumentError(f"{name}: expected (N >= {minimum}, D) features, got shape {tuple(features.shape)}.")
    if not torch.isfinite(features).all():
        raise ArgumentError(f"{name}: contains NaN or infinite values.")
    return features.double()


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = _check(a, "a"), _check(b, "b")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root @ cov_b @ root).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    f = _check(features, "features")
    d = torch.cdist(f, f)
    n = len(f)
    return float(d.sum() / (n * (n - 1)))


def within_class_diversity(space, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise feature distance among samples of one class, averaged over the classes (a distilled or
    over-guided model collapses *within* a condition)."""
    features = space.features(images)
    return sum(mean_pairwise_distance(features[labels == c]) for c in labels.unique()) / len(labels.unique())


def coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> float:
    real, fake = _check(real, "real", k + 1), _check(fake, "fake", 1)
    radius = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # k-th neighbour, not counting itself
    nearest_fake = torch.cdist(real, fake).min(dim=1).values
    return float((nearest_fake <= radius).double().mean())


def per_class_coverage(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[int, float]:
    """Coverage of each real class by the whole fake set."""
    return {int(c): coverage(real[real_labels == c], fake, k) for c in real_labels.unique()}


def class_histogram(predicted: torch.Tensor, num_classes: int) -> list[float]:
    """Fraction of samples the classifier assigns to each class."""
    counts = torch.bincount(predicted.long().flatten(), minlength=num_classes).double()
    return (counts / counts.sum().clamp(min=1)).tolist()


def interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (the mean itself for a single value)."""
    import statistics

    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean
    from scipy.stats import t

    half = t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return float(mean - half), float(mean + half)
