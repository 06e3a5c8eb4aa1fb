"""Sampling a masked-diffusion folder the way it was trained to be sampled, for `gen sample`, `gen generate` and
the zoo: its `sampling.json` holds the call's arguments (``call``) and how its sequences render (``render``:
"digits-8x8" draws the 64 intensity tokens as an 8x8 image; none: the sequences are text).

    >>> pipe = gen.zoo.load("digits-mdlm")                     # a steered LLaDA2Pipeline, pipe.gen_sampling set
    >>> out = sample_tokens(pipe, [torch.Generator().manual_seed(s) for s in range(4)], hooks=[...])
    >>> images = render(pipe, out.sequences)                    # (4, 1, 8, 8) in [0, 1]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gen.errors import ArgumentError

SAMPLING_FILE = "sampling.json"
RENDERS = ("digits-8x8",)


def read_sampling(folder: str | Path) -> dict:
    """{"call": {...}, "render": ...} from a folder's sampling.json (an empty call where there is none)."""
    path = Path(folder) / SAMPLING_FILE
    if not path.is_file():
        return {"call": {}, "render": None}
    recorded = json.loads(path.read_text())
    if not isinstance(recorded.get("call", {}), dict) or recorded.get("render") not in (None, *RENDERS):
        raise ArgumentError(f"model: {path} is not a sampling file gen wrote (a 'call' of arguments and a 'render' in {RENDERS} or null).")
    return {"call": recorded.get("call", {}), "render": recorded.get("render")}


def sample_tokens(pipe, generators: list[torch.Generator], hooks=(), prompt: str = "", **overrides):
    """One sequence per generator, each drawn on its own (so a sample depends on its seed alone, not on the batch),
    with the folder's recorded call; returns the sequences and the counts per sample."""
    from types import SimpleNamespace

    call = {**getattr(pipe, "gen_sampling", {}).get("call", {}), **{k: v for k, v in overrides.items() if v is not None}}
    sequences, nfe, reward_calls = [], 0.0, 0.0
    for generator in generators:
        out = pipe(prompt=prompt, **call, generator=generator, output_type="seq", hooks=list(hooks))
        sequences.append(out.sequences)
        nfe, reward_calls = nfe + out.nfe, reward_calls + out.reward_calls
    n = max(1, len(generators))
    return SimpleNamespace(sequences=torch.cat(sequences), nfe=nfe / n, reward_calls=reward_calls / n)


def render(pipe, sequences: torch.Tensor) -> torch.Tensor | None:
    """Images of the sequences where the folder says how to draw them, else None (they are text)."""
    from gen.discrete.tokens import render_digits

    if getattr(pipe, "gen_sampling", {}).get("render") == "digits-8x8":
        return render_digits(sequences)
    return None
