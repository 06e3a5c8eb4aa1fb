"""Tokens of the masked-diffusion digits model, and rewards on token sequences.

The 8x8 digits are 64 tokens of 17 intensity levels (scikit-learn's 0-16), after a begin token; the mask token
stands for a position not yet drawn. `digits_tokenizer()` is a word-level tokenizer over that vocabulary (built
here, nothing downloaded), so `LLaDA2Pipeline` finds its mask token and decodes sequences as text ("0 3 16 ...").

Rewards take token ids (batch, length) and return one value per sequence:

    >>> token_count(16)                         # how many tokens are 16 (full ink)
    >>> token_regex(r"16 16 16", tokenizer)     # 1.0 where the decoded text matches
    >>> token_callable(lambda ids: ...)         # any function of the ids, its output checked
    >>> digit_log_prob(classifier, target=3)    # log p(3 | the 8x8 grid rendered as an image)
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from gen.errors import ArgumentError, ArgumentTypeError

LEVELS = 17  # intensities 0..16
MASK = 17
BOS = 18
VOCAB_SIZE = 19
SIDE = 8
LENGTH = SIDE * SIDE


def digits_tokenizer():
    """A word-level tokenizer: "0".."16", "[MASK]", "[BOS]"; a text encodes as [BOS] + its tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {str(level): level for level in range(LEVELS)} | {"[MASK]": MASK, "[BOS]": BOS}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[MASK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=core, mask_token="[MASK]", bos_token="[BOS]", unk_token="[MASK]", pad_token="[MASK]")


def render_digits(tokens: torch.Tensor) -> torch.Tensor:
    """(batch, 64) intensity tokens -> (batch, 1, 8, 8) images in [0, 1]; a token outside 0-16 (a mask left in an
    estimate) renders as 0."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != LENGTH:
        raise ArgumentError(f"tokens: expected (batch, {LENGTH}) digit tokens, got shape {tuple(tokens.shape)}.")
    levels = torch.where((tokens >= 0) & (tokens < LEVELS), tokens, torch.zeros_like(tokens))
    return (levels.float() / (LEVELS - 1)).view(-1, 1, SIDE, SIDE)


def _checked(values, ids: torch.Tensor, name: str) -> torch.Tensor:
    values = torch.as_tensor(values)
    if values.shape != (len(ids),):
        raise ArgumentError(f"{name}: expected one value per sequence, shape ({len(ids)},), got shape {tuple(values.shape)}.")
    values = values.float()
    if not torch.isfinite(values).all():
        raise ArgumentError(f"{name}: returned non-finite values for some sequences.")
    return values


def token_count(token: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """How many positions hold `token`."""
    return lambda ids: (torch.as_tensor(ids) == token).sum(-1).float()


def token_regex(pattern: str, tokenizer) -> Callable[[torch.Tensor], torch.Tensor]:
    """1.0 where the decoded text (special tokens skipped) matches `pattern` (re.search), else 0.0."""
    compiled = re.compile(pattern)

    def reward(ids: torch.Tensor) -> torch.Tensor:
        texts = tokenizer.batch_decode(torch.as_tensor(ids), skip_special_tokens=True)
        return torch.tensor([1.0 if compiled.search(text) else 0.0 for text in texts])

    return reward


def token_callable(fn: Callable[[torch.Tensor], torch.Tensor], name: str = "reward") -> Callable[[torch.Tensor], torch.Tensor]:
    """Any function of the ids, its output checked: one finite value per sequence."""
    if not callable(fn):
        raise ArgumentTypeError(f"{name}: expected a callable on token ids (batch, length) -> (batch,), got {type(fn).__name__}.")
    return lambda ids: _checked(fn(ids), ids, name)


def digit_log_prob(classifier, target: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """log p(target | the 8x8 grid rendered as an image) under a digits classifier (any size: it resizes)."""
    from gen.guidance import classifier_log_prob

    reward = classifier_log_prob(classifier, target)
    return lambda ids: reward(render_digits(ids))
