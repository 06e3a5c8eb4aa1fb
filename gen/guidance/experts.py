"""Noise-level experts (PPAP, Go et al. 2023): copies of one off-the-shelf clean classifier, each with its own LoRA,
each responsible for one range of timesteps. `gen.training.ppap` trains them; `ClassifierGuidance.from_pretrained`
guides with them.

    >>> experts = NoiseExperts.from_pretrained("gen/zoo/weights/digits-ppap")       # the teacher loaded by name
    >>> experts(x_t, t).shape                                                      # (B, num_classes), routed by t

A saved folder holds ``ppap.json`` (the teacher's spec, the timestep ranges, how x_t maps to the classifier's input,
how it was trained) and one peft LoRA folder per expert (``expert-0``, ...), loaded through safetensors only. The
teacher itself is not copied: it is loaded by its "scheme:NAME" spec (the zoo's classifiers) or passed in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from gen.errors import ArgumentError, MissingFileError

EXPERTS_FILE = "ppap.json"


def equal_ranges(num_experts: int, num_train_timesteps: int) -> list[tuple[int, int]]:
    """[k T / K, (k + 1) T / K) for k < K: the paper's split of the timesteps among K experts."""
    if not isinstance(num_experts, int) or not 1 <= num_experts <= num_train_timesteps:
        raise ArgumentError(f"num_experts: must be an integer in [1, {num_train_timesteps}], got {num_experts!r}.")
    edges = [round(k * num_train_timesteps / num_experts) for k in range(num_experts + 1)]
    return list(zip(edges[:-1], edges[1:]))


class NoiseExperts(torch.nn.Module):
    """``(x_t, t) -> logits``: the expert whose [low, high) holds t reads ``x_t * scale + shift`` (the classifier's
    input range; (x + 1) / 2 maps gen's [-1, 1] pixels to a [0, 1] classifier). t is one timestep or one per row.

    Args:
        classifier: the clean classifier, ``images -> logits``; each expert is a deep copy of it.
        ranges: the experts' [low, high) timestep ranges, contiguous and increasing.
        scale, shift: the map from x_t to the classifier's input.
    """

    def __init__(self, classifier: torch.nn.Module, ranges: list[tuple[int, int]], scale: float = 0.5, shift: float = 0.5):
        super().__init__()
        ranges = [(int(low), int(high)) for low, high in ranges]
        if not ranges or any(low >= high for low, high in ranges) or any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
            raise ArgumentError(f"ranges: expected contiguous increasing [low, high) timestep ranges, got {ranges}.")
        self.ranges, self.scale, self.shift = ranges, float(scale), float(shift)
        self.experts = torch.nn.ModuleList(copy.deepcopy(classifier) for _ in ranges)
        self.register_buffer("_edges", torch.tensor([high for _, high in ranges[:-1]], dtype=torch.float64), persistent=False)

    def route(self, t: torch.Tensor) -> torch.Tensor:
        """The expert index for each timestep (outside the ranges: the nearest end expert)."""
        return torch.bucketize(torch.as_tensor(t).double().to(self._edges.device), self._edges, right=True)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        which = self.route(t.expand(len(x)) if t.ndim == 0 else t)
        inputs = x * self.scale + self.shift
        rows = [(k, (which == k).nonzero()[:, 0].to(x.device)) for k in which.unique().tolist()]
        parts = [(index, self.experts[k](inputs[index])) for k, index in rows]
        logits = parts[0][1].new_empty(len(x), parts[0][1].shape[1])
        for index, part in parts:
            logits[index] = part
        return logits

    def save_pretrained(self, folder: str | Path, teacher: str | None, lora_config, record: dict | None = None) -> None:
        """ppap.json and one LoRA folder per expert (gen.training.lora's layout), into an existing folder."""
        from gen.core.lora import save_adapter
        from gen.io import write_json

        folder = Path(folder)
        for k, expert in enumerate(self.experts):
            where = folder / f"expert-{k}"
            where.mkdir(parents=True, exist_ok=False)
            save_adapter(expert, lora_config, where)
        write_json(folder / EXPERTS_FILE, {"teacher": teacher, "ranges": self.ranges, "scale": self.scale, "shift": self.shift, **(record or {})})

    @classmethod
    def from_pretrained(cls, folder: str | Path, classifier: torch.nn.Module | None = None) -> "NoiseExperts":
        """The experts of a folder gen.training.ppap wrote; `classifier`: the teacher, when the folder's spec does not
        name one gen can load (a classifier of your own)."""
        from gen.core.lora import load_lora
        from gen.plugins import is_named, load_named

        folder = Path(folder)
        if not (folder / EXPERTS_FILE).is_file():
            raise MissingFileError(f"experts: {folder} has no {EXPERTS_FILE}; pass the folder `python -m gen.training.ppap` wrote.")
        meta = json.loads((folder / EXPERTS_FILE).read_text())
        teacher = meta.get("teacher")
        if classifier is None:
            if not is_named(teacher):
                raise ArgumentError(
                    f"classifier: the experts in {folder} were trained from {teacher!r}, which gen cannot load by name; pass classifier=<that model>."
                )
            classifier = load_named(teacher, "classifier")
        experts = cls(classifier, meta["ranges"], meta.get("scale", 0.5), meta.get("shift", 0.5))
        for k, expert in enumerate(experts.experts):
            load_lora(expert, folder / f"expert-{k}")
        return experts.eval().requires_grad_(False)
