"""Condition corruption: CEP in training, condition dropout for CFG, synthetic corruption, CADS at sampling.

CEP (Chen et al., NeurIPS 2024, "Slight Corruption in Pre-training Data Makes Better Diffusion Models")
adds a small perturbation to the condition *embedding* during training only. gen implements

    c' = c + (gamma / sqrt(d)) * eps,   eps ~ N(0, I)  (gaussian)  or  eps ~ U[-1, 1]^d  (uniform)

with d the embedding width (last dimension): the per-element scale gamma/sqrt(d) keeps the perturbation's
norm near gamma whatever the width (uniform: norm gamma/sqrt(3)). gamma = 1 is the usual default. Where the
condition is a tensor (text or image embeddings) it is perturbed directly; where it is a class label the
output of the backbone's class-embedding table is perturbed, through a forward hook that acts only while
the module is in training mode. Rows that carry the null condition (dropped for CFG) are left alone.

CADS (Sadat et al., ICLR 2024) anneals noise on the condition over sampling:
    y_hat = sqrt(gamma(t)) * y + s * sqrt(1 - gamma(t)) * n,
    gamma(t) = 1 for t <= tau1, (tau2 - t) / (tau2 - tau1) between, 0 for t >= tau2,
with t in [0, 1] running from 1 (first step) to 0, then rescales y_hat to y's mean and standard deviation
and mixes: psi * rescaled + (1 - psi) * y_hat.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from gen.errors import ArgumentError, require_choice, require_int, require_number
from gen.core.backbones import Condition, condition_at, with_condition
from gen.core.denoiser import Denoiser
from gen.core.hooks import SamplingHook, Step

CEP_KINDS = ("gaussian", "uniform")


# -- condition embedding modules ------------------------------------------------------------------------------------
def class_embedding_tables(model) -> list[tuple[nn.Module, int]]:
    """The modules whose output is a class-label embedding, each with its null (unconditional) label."""
    model = getattr(model, "_orig_mod", model)
    table = getattr(model, "class_embedding", None)
    if isinstance(table, nn.Embedding):
        return [(table, table.num_embeddings - 1)]
    tables = []
    for module in model.modules():
        if type(module).__name__ == "LabelEmbedding":  # DiT: one table per block's AdaLayerNormZero
            tables.append((module, module.num_classes))
    return tables


def disable_builtin_label_dropout(model) -> int:
    """Turn off the label dropout some class tables apply on their own in training (diffusers' DiT
    `LabelEmbedding`, 10% by default): gen's trainer drops conditions itself (`condition_dropout`), and CEP
    must know which rows carry the null class. The null row of the table stays. Returns how many tables."""
    count = 0
    for module, _ in class_embedding_tables(model):
        if getattr(module, "dropout_prob", 0) > 0:
            module.dropout_prob = 0.0
            count += 1
    return count


@contextlib.contextmanager
def transformed_class_embeddings(model, transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Apply transform(embeddings, conditional_rows) to every class-embedding output during the block."""
    handles = []
    for module, null in class_embedding_tables(model):

        def hook(mod, args, output, null=null):
            labels = args[0]
            return transform(output, labels != null)

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# -- CEP ------------------------------------------------------------------------------------------------------------
class ConditionEmbeddingPerturbation:
    """CEP: c + (gamma / sqrt(d)) * eps on condition embeddings, in training only (see module docstring)."""

    def __init__(self, kind: str = "gaussian", gamma: float = 1.0):
        require_choice(kind, "cep", CEP_KINDS)
        require_number(gamma, "cep_gamma", minimum=0)
        self.kind, self.gamma = kind, float(gamma)

    def noise(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise shaped like `like`, drawn in float32 on the generator's device, returned in like's device and dtype."""
        scale = self.gamma / like.shape[-1] ** 0.5
        where = generator.device if generator is not None else like.device
        if self.kind == "gaussian":
            eps = torch.randn(like.shape, generator=generator, dtype=torch.float32, device=where)
        else:
            eps = torch.rand(like.shape, generator=generator, dtype=torch.float32, device=where) * 2 - 1
        return (eps * scale).to(like.device, like.dtype)

    def perturb(self, embedding: torch.Tensor, keep: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """embedding + noise on the rows where keep is True (all rows when keep is None)."""
        noise = self.noise(embedding, generator)
        if keep is not None:
            noise = noise * keep.reshape(-1, *([1] * (embedding.ndim - 1))).to(noise.device, noise.dtype)
        return embedding + noise

    @contextlib.contextmanager
    def on_class_embeddings(self, model, generator: torch.Generator | None = None) -> Iterator[None]:
        """Perturb the model's class-embedding outputs while its modules are in training mode."""

        def transform(embedding, conditional):
            return self.perturb(embedding, conditional, generator) if torch.is_grad_enabled() and model.training else embedding

        with transformed_class_embeddings(model, transform):
            yield

    def __repr__(self) -> str:
        return f"ConditionEmbeddingPerturbation(kind={self.kind!r}, gamma={self.gamma})"


# -- dropout and synthetic corruption -------------------------------------------------------------------------------
def drop_mask(batch: int, probability: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """True where the condition is dropped (replaced by the null condition) for classifier-free guidance.
    Drawn on the generator's device (CPU by default), returned on `device`."""
    if probability <= 0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    where = generator.device if generator is not None else "cpu"
    return (torch.rand(batch, generator=generator, device=where) < probability).to(device or where)


def corrupt_labels(labels: torch.Tensor, rate: float, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Flip a fraction `rate` of labels to a different class chosen uniformly (fixed by seed)."""
    g = torch.Generator().manual_seed(seed)
    labels = labels.clone()
    flip = torch.rand(len(labels), generator=g) < rate
    offsets = torch.randint(1, num_classes, (len(labels),), generator=g)
    labels[flip] = (labels[flip] + offsets[flip]) % num_classes
    return labels


def corrupt_pairs(count: int, rate: float, seed: int = 0) -> list[int]:
    """For caption/embedding corruption: the index whose condition each example takes (a swap for a
    fraction `rate` of examples, fixed by seed)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.arange(count)
    chosen = torch.nonzero(torch.rand(count, generator=g) < rate).flatten()
    if len(chosen) > 1:
        index[chosen] = chosen[torch.randperm(len(chosen), generator=g)]
    return index.tolist()


# -- CADS -----------------------------------------------------------------------------------------------------------
# float conditions CADS perturbs, at any depth of the condition (SDXL's pooled text and size/crop time ids ride in
# added_cond_kwargs)
ANNEALED = ("encoder_hidden_states", "pooled_projections", "class_labels", "embedding_grid", "text_embeds", "time_ids")


def _annealable(cond: dict) -> list[tuple[str, ...]]:
    """Paths to the float tensors CADS perturbs in a (possibly nested) condition."""
    paths = []
    for key, value in cond.items():
        if isinstance(value, dict):
            paths += [(key, *p) for p in _annealable(value)]
        elif key in ANNEALED and isinstance(value, torch.Tensor) and value.is_floating_point():
            paths.append((key,))
    return paths


class CADS(SamplingHook):
    """Condition-annealed sampling: noise on the condition early, the clean condition late.

    Tensor conditions (``encoder_hidden_states``, ``pooled_projections``, float ``class_labels``, the large
    image path's ``embedding_grid``) are
    annealed through the `condition` point; class-label backbones (UNet class tables, DiT) through the
    `denoiser` point, which perturbs the class-embedding outputs of the conditional rows.

    Args:
        tau1, tau2: the annealing window on t in [0, 1] (1 = first step).
        noise_scale: s, the noise's scale.
        mixing_factor: psi, how much of the rescaled condition to keep.
        rescale: rescale y_hat to y's mean and standard deviation (per sample).
        seed: mixed into the run's seed for the condition noise: the same pipeline seed gives the same image.

    Example:
        >>> pipe(class_labels=[3] * 8, guidance_scale=6.0, hooks=[CADS(noise_scale=0.25)])
    """

    def __init__(self, tau1: float = 0.6, tau2: float = 0.9, noise_scale: float = 0.25, mixing_factor: float = 1.0, rescale: bool = True, seed: int = 0):
        for name, value in (("tau1", tau1), ("tau2", tau2), ("noise_scale", noise_scale), ("mixing_factor", mixing_factor)):
            require_number(value, name)
        require_int(seed, "seed", minimum=0)
        if not 0 <= tau1 < tau2 <= 1:
            raise ArgumentError(f"tau1, tau2: need 0 <= tau1 < tau2 <= 1, got {tau1}, {tau2}.")
        if noise_scale < 0:
            raise ArgumentError(f"noise_scale: must be >= 0, got {noise_scale}.")
        if not 0 <= mixing_factor <= 1:
            raise ArgumentError(f"mixing_factor: must lie in [0, 1], got {mixing_factor}.")
        self.tau1, self.tau2, self.noise_scale = tau1, tau2, noise_scale
        self.mixing_factor, self.rescale, self.seed = mixing_factor, rescale, seed
        self.generator = None

    def validate(self, run) -> None:
        """CADS anneals a condition: refuse a run that has none it can reach (it would be a silent no-op)."""
        cond = run.cond or {}
        tensors = _annealable(cond)
        tables = "class_labels" in cond and bool(class_embedding_tables(run.denoiser.model))
        if not (tensors or tables):
            raise ArgumentError(
                f"hooks: CADS anneals the condition, but this run has none it can anneal (cond keys: {sorted(cond) or 'none'}); "
                "use it on a conditional model (class labels, text or embeddings), or drop it."
            )

    def setup(self, run) -> None:
        self.generator = run.hook_generator(self.seed)

    def gamma(self, step: Step) -> float:
        t = 1.0 - step.progress
        if t <= self.tau1:
            return 1.0
        if t >= self.tau2:
            return 0.0
        return (self.tau2 - t) / (self.tau2 - self.tau1)

    def anneal(self, y: torch.Tensor, gamma: float) -> torch.Tensor:
        if gamma >= 1.0:
            return y
        noise = torch.randn(y.shape, generator=self.generator, dtype=torch.float32).to(y.device, y.dtype)
        y_hat = gamma**0.5 * y + self.noise_scale * (1 - gamma) ** 0.5 * noise
        if not self.rescale:
            return y_hat
        dims = tuple(range(1, y.ndim))
        mean_y, std_y = y.mean(dims, keepdim=True), y.std(dims, keepdim=True)
        mean_h, std_h = y_hat.mean(dims, keepdim=True), y_hat.std(dims, keepdim=True)
        rescaled = (y_hat - mean_h) / std_h.clamp_min(1e-12) * std_y + mean_y
        return self.mixing_factor * rescaled + (1 - self.mixing_factor) * y_hat

    def condition(self, step: Step, cond: Condition) -> Condition:
        gamma = self.gamma(step)
        out = dict(cond)
        for path in _annealable(cond):
            out = with_condition(out, path, self.anneal(condition_at(cond, path), gamma))
        return out

    def denoiser(self, step: Step, current: Denoiser) -> Denoiser:
        gamma = self.gamma(step)
        if gamma >= 1.0 or not class_embedding_tables(current.model):
            return current
        return _ClassEmbeddingTransform(current, lambda emb, conditional: torch.where(conditional[:, None], self.anneal(emb, gamma), emb))

    def __repr__(self) -> str:
        return f"CADS(tau1={self.tau1}, tau2={self.tau2}, noise_scale={self.noise_scale}, mixing_factor={self.mixing_factor})"


class _ClassEmbeddingTransform(Denoiser):
    """The same denoiser (same scheduler), with its class-embedding outputs transformed during each call."""

    def __init__(self, inner: Denoiser, transform):
        self.__dict__.update(inner.__dict__)
        self._transform = transform

    def forward(self, x, t, cond=None):
        with transformed_class_embeddings(self.model, self._transform):
            return super().forward(x, t, cond)
