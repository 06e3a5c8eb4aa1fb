"""Load any saved pipeline folder, gen's or diffusers', by its model_index.json, safetensors only, and
without running code from the folder.

A folder's model_index.json names classes as ``[library, class]``. diffusers imports a module the folder
ships when the library names a ``.py`` file in it (a custom pipeline or component: the folder's code runs
at load), so before any load `check_folder` accepts only classes found by name in gen's own package or
in the libraries diffusers itself loads components from, refuses any ``.py`` a name could point at, and
checks that every component folder exists and its weights are readable safetensors. Running a folder's
code stays the user's explicit choice: ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
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


STUB_MODULE = "gen_pipeline"  # the one-line module a saved gen pipeline carries


def stub_source(class_name: str) -> str:
    """The one-line module a saved gen pipeline folder carries, so diffusers can find its class the way it
    finds any custom pipeline (``_class_name: ["gen_pipeline", class_name]``)."""
    return (
        f'"""Written by gen (pip install gen-diffusion): this folder holds a gen.pipelines.{class_name}. Load it with\n'
        f"gen.pipelines.{class_name}.from_pretrained(folder), or with\n"
        f'diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."""\n\n'
        f"from gen.pipelines import {class_name}  # noqa: F401\n"
    )


_COMPONENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GEN_MODULE = re.compile(r"^gen(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def gen_class(module: str, class_name: str) -> type | None:
    """A class gen itself defines, found by name in gen's installed package (never a file of the folder):
    `module` must be a module of the installed gen package."""
    if not isinstance(module, str) or not isinstance(class_name, str) or not _GEN_MODULE.match(module):
        return None
    package = importlib.util.find_spec("gen")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    roots = [os.path.realpath(p) for p in (package.submodule_search_locations or [])]
    origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else None
    if origin is None or not any(origin.startswith(root + os.sep) for root in roots):
        return None
    found = getattr(importlib.import_module(module), class_name, None)
    return found if isinstance(found, type) and found.__module__.startswith("gen.") else None


def library_class(library: str, class_name: str) -> type | None:
    """A class from a library diffusers loads components from (diffusers, its pipeline modules,
    transformers), found by attribute; None for anything else."""
    from diffusers import pipelines
    from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

    if not isinstance(library, str) or not isinstance(class_name, str):
        return None
    if library in LOADABLE_CLASSES:
        try:
            module = importlib.import_module(library)
        except ImportError:
            return None
    elif _COMPONENT_NAME.match(library) and hasattr(pipelines, library):
        module = getattr(pipelines, library)
    else:
        return gen_class(library, class_name)
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) else None


def pipeline_class(index: dict, folder: Path, name: str = "path") -> type:
    """The pipeline class model_index.json names: gen's by name (``["gen_pipeline", Class]`` with gen's own
    one-line stub beside it, or a plain name), else diffusers'. Anything else is refused."""
    import diffusers
    from diffusers import DiffusionPipeline

    import gen.pipelines

    entry = index.get("_class_name")
    where = folder / "model_index.json"
    if isinstance(entry, list) and len(entry) == 2 and entry[0] == STUB_MODULE:
        cls = getattr(gen.pipelines, str(entry[1]), None)
        stub = folder / f"{STUB_MODULE}.py"
        if cls is not None and stub.is_file():
            if stub.read_text(errors="replace") != stub_source(cls.__name__):
                raise ArgumentError(
                    f"{name}: {stub} is not the file gen writes and may run other code; gen never imports it. "
                    "Delete it (gen does not need it) or, if you trust the folder, load with DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."
                )
    elif isinstance(entry, str):
        cls = getattr(gen.pipelines, entry, None) or getattr(diffusers, entry, None)
    else:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, DiffusionPipeline)):
        raise ArgumentError(
            f"{name}: {where} entry _class_name = {entry!r} is not a pipeline of gen or diffusers; gen never imports a folder's own code. "
            "If you trust the folder, load it with DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."
        )
    return cls


def check_folder(folder: Path, index: dict, name: str = "path") -> type:
    """Everything a load of `folder` would read, checked before any of it is read: the pipeline class and
    every component's class (see `pipeline_class`, `library_class`), no ``.py`` a name could run, component
    folders present, weights readable safetensors. Returns the pipeline class."""
    cls = pipeline_class(index, folder, name)
    where = folder / "model_index.json"
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list):
            continue
        if not _COMPONENT_NAME.match(key):
            raise ArgumentError(
                f"{name}: {where} names a component {key!r}, which is not a plain name (it could point outside the folder); the folder is damaged or hostile."
            )
        if len(value) != 2 or value == [None, None]:
            continue
        library, class_name = value
        if library_class(library, class_name) is None:
            raise ArgumentError(
                f"{name}: {where} entry {key!r} = {value!r} is not a class of gen or of a library diffusers loads from; gen never imports a folder's own code. "
                "If you trust the folder, load it with DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."
            )
        component = folder / key
        if not component.is_dir():
            raise MissingFileError(f"{name}: {where} lists the component {key!r} but {component} is missing; copy the whole folder that save_pretrained wrote.")
        code = component / f"{library}.py"
        if code.exists():
            raise ArgumentError(
                f"{name}: {code} is code that diffusers would import for {key!r}; gen never runs a folder's code. Remove it, or load with "
                "DiffusionPipeline.from_pretrained(folder, trust_remote_code=True) if you trust it."
            )
        check_weights(component, name)
    return cls


def check_weights(component: Path, name: str = "path") -> None:
    """Every .safetensors file in a component folder opens as safetensors (a truncated file, or pickle behind
    the name, is refused naming the file); pickle files are refused."""
    from safetensors import SafetensorError, safe_open

    refuse_pickle(component, name)
    for path in sorted(component.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as err:
            raise ArgumentError(
                f"{name}: {path} is not a readable safetensors file ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                "it is truncated, corrupt or another format. Copy it again from its source."
            ) from None


def refuse_pickled_components(folder: Path, index: dict, name: str = "path") -> None:
    """Refuse pickle-format weights in the files a load would read (accelerate's RNG and optimizer state in
    checkpoints/ are not weights and are never loaded)."""
    for path in [p for p in folder.iterdir() if p.is_file()] + [p for p in component_folders(folder, index) if p.exists()]:
        refuse_pickle(path, name)


def load_pipeline(folder: str | Path, name: str = "path", dtype=None, device=None, torch_dtype=None, **kwargs):
    """The pipeline saved in folder, of the class its model_index.json names (gen.pipelines or diffusers),
    in `dtype` (or `torch_dtype`, as `DiffusionPipeline.from_pretrained` takes them) and moved to `device`."""
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise ArgumentTypeError(f"{name}: expected the path of a saved pipeline folder, got {folder!r}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{name}: no folder at {folder}; pass a folder written by save_pretrained.")
    index = read_index(folder, name)
    cls = check_folder(folder, index, name)
    refuse_pickled_components(folder, index, name)
    if _tokenizer_as_argument(cls) and "tokenizer" not in kwargs and isinstance(index.get("tokenizer"), list) and index["tokenizer"][0] is not None:
        # diffusers 0.42 takes LLaDA2Pipeline's `tokenizer=None` default for a config value and passes the raw
        # model_index entry: the tokenizer (tokenizer.json, no code) is loaded here and handed over instead
        from transformers import AutoTokenizer

        kwargs["tokenizer"] = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    with _quiet_loading():  # the per-component loading bar is noise for local folders; sampling bars stay on
        pipe = cls.from_pretrained(str(folder), use_safetensors=True, dtype=resolve_dtype(dtype, torch_dtype), **kwargs)
    from gen.discrete.sampling import SAMPLING_FILE, read_sampling

    if (folder / SAMPLING_FILE).is_file():  # a masked-diffusion folder's recorded call and rendering
        pipe.gen_sampling = read_sampling(folder)
    return pipe.to(device) if device is not None else pipe


def _tokenizer_as_argument(cls) -> bool:
    from diffusers import LLaDA2Pipeline

    return issubclass(cls, LLaDA2Pipeline)


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
