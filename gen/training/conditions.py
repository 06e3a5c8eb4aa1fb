"""Conditions in training: a batch's labels, captions or embeddings -> backbone keyword arguments, with
condition dropout (for classifier-free guidance) and CEP applied where each kind of condition lives.
CEP draws from its own generator, so turning it on (or setting gamma = 0) leaves every other random draw
of the run unchanged."""

from __future__ import annotations

import contextlib

import torch

from gen.conditioning import ConditionEmbeddingPerturbation, drop_mask
from gen.core.backbones import Backbone


class NoCondition:
    kind = "none"
    width = None

    def __call__(self, batch, generator, dropout: float, cep, cep_generator=None) -> dict:
        return {}

    def cep_context(self, model, cep, generator):
        return contextlib.nullcontext()


class ClassCondition:
    """Integer labels; dropped rows take the null class (num_classes). CEP acts on the backbone's
    class-embedding output (see `ConditionEmbeddingPerturbation.on_class_embeddings`)."""

    kind = "class"
    width = None

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def __call__(self, batch, generator, dropout: float, cep, cep_generator=None) -> dict:
        labels = torch.as_tensor(batch["label"]).long()
        dropped = drop_mask(len(labels), dropout, generator, device=labels.device)
        return {"class_labels": torch.where(dropped, torch.full_like(labels, self.num_classes), labels)}

    def cep_context(self, model, cep: ConditionEmbeddingPerturbation | None, generator):
        return cep.on_class_embeddings(model, generator) if cep is not None else contextlib.nullcontext()


class TextCondition:
    """Captions through a frozen transformers text encoder (last hidden state). Dropped rows take the empty
    caption, as Stable Diffusion's training does; CEP perturbs the hidden states of the kept rows."""

    kind = "text"

    def __init__(self, tokenizer, encoder, encode_fn=None):
        """encode_fn(captions) -> hidden states, when the model to fine-tune encodes prompts its own way (a
        stock pipeline's `encode_prompt`), so training sees what sampling will."""
        self.tokenizer, self.encoder = tokenizer, encoder.eval().requires_grad_(False)
        self.encode_fn = encode_fn
        self.width = encoder.config.hidden_size
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self._cache})
        if missing:
            tokens = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt")
            hidden = self.encode_fn(missing) if self.encode_fn is not None else self.encoder(**tokens.to(self.encoder.device))[0]
            self._cache.update(zip(missing, hidden))
        return torch.stack([self._cache[c] for c in captions])

    def __call__(self, batch, generator, dropout: float, cep, cep_generator=None) -> dict:
        captions = list(batch["caption"])
        dropped = drop_mask(len(captions), dropout, generator)
        captions = ["" if d else c for c, d in zip(captions, dropped.tolist())]
        hidden = self.encode(captions)
        if cep is not None:
            hidden = cep.perturb(hidden, ~dropped, cep_generator)
        return {"encoder_hidden_states": hidden}

    def cep_context(self, model, cep, generator):
        return contextlib.nullcontext()


class EmbeddingCondition:
    """Precomputed image embeddings (B, D) -> the backbone's embedding condition (one cross-attention token,
    and the time-embedding input where the model has one; see `Backbone.embedding_condition`); dropped rows
    take the zero vector (the null embedding); CEP perturbs the kept rows."""

    kind = "embedding"

    def __init__(self, width: int):
        self.width = width
        self.backbone = None

    def bind(self, model) -> None:
        """Condition this model (its `Backbone.embedding_condition` decides the keyword arguments)."""
        self.backbone = Backbone(model)

    def __call__(self, batch, generator, dropout: float, cep, cep_generator=None) -> dict:
        embedding = batch["embedding"].float()
        dropped = drop_mask(len(embedding), dropout, generator, device=embedding.device)
        embedding = embedding * (~dropped)[:, None].float()
        if cep is not None:
            embedding = cep.perturb(embedding, ~dropped, cep_generator)
        return self.backbone.embedding_condition(embedding)

    def cep_context(self, model, cep, generator):
        return contextlib.nullcontext()
