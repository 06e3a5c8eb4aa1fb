"""Load any saved pipeline folder, gen's or diffusers', by its model_index.json, safetensors only."""

from __future__ import annotations

import json
from pathlib import Path

from gen.io import refuse_pickle


def load_pipeline(folder: str | Path, name: str = "path", **kwargs):
    """The pipeline saved in folder, of the class its model_index.json names (gen.pipelines or diffusers)."""
    import diffusers

    import gen.pipelines

    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{name}: {folder} has no model_index.json; pass a folder written by save_pretrained.")
    refuse_pickle(folder, name)
    class_name = json.loads(index.read_text()).get("_class_name")
    cls = getattr(gen.pipelines, class_name, None) or getattr(diffusers, class_name, None)
    if cls is None:
        raise ValueError(f"{name}: unknown pipeline class {class_name!r} in {index}.")
    pipe = cls.from_pretrained(str(folder), use_safetensors=True, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
