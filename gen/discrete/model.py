"""`TokenDenoiser`: a small bidirectional transformer over token sequences, the denoiser of a masked-diffusion model
(MDLM, Sahoo et al. 2024) in the form `LLaDA2Pipeline` calls: ``model(ids, attention_mask=..., position_ids=...)``
returns an output with ``.logits`` of shape (batch, length, vocab_size).

MDLM needs no time input: the mask pattern says how noisy a sequence is. The encoder is torch's own
`nn.TransformerEncoder`; positions are learned embeddings read at ``position_ids``.

    >>> model = TokenDenoiser(vocab_size=19, max_length=65)
    >>> model(torch.zeros(2, 65, dtype=torch.long)).logits.shape
    torch.Size([2, 65, 19])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class TokenDenoiserOutput(BaseOutput):
    logits: torch.Tensor


class TokenDenoiser(ModelMixin, ConfigMixin):
    """Token ids -> per-position logits over the vocabulary, attending both ways (padding masked out).

    Args:
        vocab_size: token ids are in [0, vocab_size).
        max_length: the longest sequence (positions are learned up to it).
        width, layers, heads: the transformer's size; the feed-forward is 4 x width.
        dropout: dropout inside the encoder layers while training.
    """

    @register_to_config
    def __init__(self, vocab_size: int, max_length: int, width: int = 128, layers: int = 4, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_length, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None, return_dict: bool = True
    ):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)
        hidden = self.embed(input_ids) + self.position(position_ids)
        padding = None if attention_mask is None else attention_mask == 0
        logits = self.head(self.norm(self.encoder(hidden, src_key_padding_mask=padding)))
        return TokenDenoiserOutput(logits=logits) if return_dict else (logits,)


class TokenValueNetwork(ModelMixin, ConfigMixin):
    """SVDD-MC's value on token states: ids (batch, length) of a partially masked sequence -> the expected reward of
    the sequence it will become. The mask token is an ordinary input token: the pattern of masks says how far the
    sequence is from done. ``t`` (what `LearnedValue` passes) is accepted and not needed.

    Args:
        vocab_size, length: the ids' range and the sequence length.
        width: the embedding width per position; hidden: the MLP's width.
    """

    @register_to_config
    def __init__(self, vocab_size: int, length: int, width: int = 16, hidden: int = 256):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        self.mlp = nn.Sequential(nn.Linear(length * width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, ids: torch.LongTensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp((self.embed(ids) + self.position).flatten(1))[:, 0]
