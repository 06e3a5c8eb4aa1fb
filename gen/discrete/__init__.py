"""Discrete (masked) diffusion: a token denoiser, digit tokens and rewards on sequences, and the steering of
`LLaDA2Pipeline` on token states (SVDD, best-of-N, FK) that `gen.pipelines.steer` runs."""

from gen.discrete.model import TokenDenoiser, TokenValueNetwork
from gen.discrete.tokens import digit_log_prob, digits_tokenizer, render_digits, token_callable, token_count, token_regex

__all__ = ["TokenDenoiser", "TokenValueNetwork", "digit_log_prob", "digits_tokenizer", "render_digits", "token_callable", "token_count", "token_regex"]
