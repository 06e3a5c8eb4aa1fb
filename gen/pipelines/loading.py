"""Load any saved pipeline folder, gen's or diffusers', by its model_index.json, safetensors only."""

from __future__ import annotations

import json
from pathlib import Path

from gen.io import refuse_pickle


def resolve_dtype(dtype, torch_dtype):
    """diffusers 0.42 and transformers 5 call it `dtype`; `torch_dtype`, the older name, is taken too."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype, torch_dtype: two different dtypes given ({dtype}, {torch_dtype}); pass only dtype.")
    return dtype if dtype is not None else torch_dtype


def load_pipeline(folder: str | Path, name: str = "path", dtype=None, device=None, torch_dtype=None, **kwargs):
    """The pipeline saved in folder, of the class its model_index.json names (gen.pipelines or diffusers),
    in `dtype` (or `torch_dtype`, as `DiffusionPipeline.from_pretrained` takes them) and moved to `device`."""
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
    pipe = cls.from_pretrained(str(folder), use_safetensors=True, dtype=resolve_dtype(dtype, torch_dtype), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe
