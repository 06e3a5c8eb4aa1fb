"""Load any saved pipeline folder, gen's or diffusers', by its model_index.json, safetensors only."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from gen.errors import ArgumentError, ArgumentTypeError, MissingFileError
from gen.io import refuse_pickle


def resolve_dtype(dtype, torch_dtype):
    """diffusers 0.42 and transformers 5 call it `dtype`; `torch_dtype`, the older name, is taken too."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ArgumentError(f"dtype, torch_dtype: two different dtypes given ({dtype}, {torch_dtype}); pass only dtype.")
    return dtype if dtype is not None else torch_dtype


def read_index(folder: Path, name: str = "path") -> dict:
    """model_index.json of a saved pipeline folder; errors name the file."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise MissingFileError(f"{name}: {folder} has no model_index.json; pass a folder written by save_pretrained.")
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArgumentError(f"{name}: {index} is not readable JSON ({err}); the folder is damaged.") from None
    if not isinstance(data, dict) or "_class_name" not in data:
        raise ArgumentError(f"{name}: {index} has no _class_name; it is not a pipeline's model_index.json.")
    return data


def component_folders(folder: Path, index: dict) -> list[Path]:
    """The subfolders a pipeline load reads: one per registered component (not checkpoints/ or logs/, where
    accelerate keeps its own state)."""
    return [folder / key for key, value in index.items() if not key.startswith("_") and isinstance(value, list) and value[0] is not None]


def refuse_pickled_components(folder: Path, index: dict, name: str = "path") -> None:
    """Refuse pickle-format weights in the files a load would read (accelerate's RNG and optimizer state in
    checkpoints/ are not weights and are never loaded)."""
    for path in [p for p in folder.iterdir() if p.is_file()] + [p for p in component_folders(folder, index) if p.exists()]:
        refuse_pickle(path, name)


def load_pipeline(folder: str | Path, name: str = "path", dtype=None, device=None, torch_dtype=None, **kwargs):
    """The pipeline saved in folder, of the class its model_index.json names (gen.pipelines or diffusers),
    in `dtype` (or `torch_dtype`, as `DiffusionPipeline.from_pretrained` takes them) and moved to `device`."""
    import diffusers

    import gen.pipelines

    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise ArgumentTypeError(f"{name}: expected the path of a saved pipeline folder, got {folder!r}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{name}: no folder at {folder}; pass a folder written by save_pretrained.")
    index = read_index(folder, name)
    refuse_pickled_components(folder, index, name)
    class_name = index["_class_name"]
    class_name = class_name[1] if isinstance(class_name, list) else class_name
    cls = getattr(gen.pipelines, str(class_name), None) or getattr(diffusers, str(class_name), None)
    if cls is None:
        raise ArgumentError(f"{name}: unknown pipeline class {class_name!r} in {folder / 'model_index.json'}; gen loads its own and diffusers' pipelines.")
    with _quiet_loading():  # the per-component loading bar is noise for local folders; sampling bars stay on
        pipe = cls.from_pretrained(str(folder), use_safetensors=True, dtype=resolve_dtype(dtype, torch_dtype), **kwargs)
    return pipe.to(device) if device is not None else pipe


@contextlib.contextmanager
def _quiet_loading():
    from diffusers.utils import logging

    was_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()
