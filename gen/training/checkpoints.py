"""Training checkpoints on top of `accelerator.save_state` / `load_state`, made atomic and verifiable.

A checkpoint is written by every process into ``.checkpoint-N.tmp``; the main process then writes
``manifest.json`` (step, epoch, and the size and SHA-256 of every file) and renames the folder to
``checkpoint-N``. A folder without a manifest, or whose files do not match it, is not a checkpoint:
``--resume latest`` skips it and ``--resume <path>`` refuses it. Model weights must be safetensors: a
checkpoint holding pickled weights (``pytorch_model.bin``, ``*.pt``, ...) is refused. accelerate's own
optimizer and RNG state files are read by accelerate with torch's ``weights_only`` loader, which cannot
run code. A sharded (FSDP) checkpoint's weights are torch.distributed.checkpoint folders: their ``.distcp``
shards are raw tensor bytes read with ``weights_only``, but their ``.metadata`` index is read by torch with a
plain ``pickle.load``; gen unpickles each index first with a loader that admits only the classes such an index
holds, so a tampered index is refused before torch reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from gen.io import PICKLE_SUFFIXES, write_json

MANIFEST = "manifest.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# accelerate's own state files: pickle containers read with weights_only=True (no code execution).
_ACCELERATE_STATE = re.compile(r"^(optimizer(_\d+)?\.bin|scheduler(_\d+)?\.bin|sampler(_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: incomplete, corrupt or pickled."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, step: int, epoch: int) -> None:
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in _files(folder)}
    write_json(folder / MANIFEST, {"step": step, "epoch": epoch, "files": files})


_DCP_INDEX = ".metadata"  # torch.distributed.checkpoint's index file in a sharded-weights folder
_DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem", "torch.distributed.checkpoint.planner")
_DCP_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


def check_dcp_index(path: Path, name: str = "resume") -> None:
    """A torch.distributed.checkpoint `.metadata` unpickled with only the classes an index holds (its metadata
    dataclasses, torch.Size, dtypes, layouts, paths); anything else (a callable, os.system...) is refused."""
    import pickle

    import torch

    class IndexOnly(pickle.Unpickler):
        def find_class(self, module, attribute):
            if module in _DCP_MODULES or (module, attribute) in _DCP_GLOBALS:
                return super().find_class(module, attribute)
            if module == "torch" and isinstance(getattr(torch, attribute, None), torch.dtype):
                return getattr(torch, attribute)
            raise CheckpointError(
                f"{name}: {path} (a sharded checkpoint's index) asks to load {module}.{attribute}, which no index holds; "
                "it was not written by torch.distributed.checkpoint and is not loaded (unpickling it could run code)."
            )

    try:
        with open(path, "rb") as handle:
            IndexOnly(handle).load()
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{name}: {path} is not a readable sharded-checkpoint index ({type(err).__name__}); the checkpoint is corrupt.") from None


def refuse_pickled_weights(folder: Path, name: str = "resume") -> None:
    for path in _files(folder):
        if path.name == _DCP_INDEX:
            check_dcp_index(path, name)
        if path.suffix in PICKLE_SUFFIXES and not _ACCELERATE_STATE.match(path.name):
            raise CheckpointError(
                f"{name}: {path} holds pickled weights; gen resumes only from safetensors weights (pickle can run code). "
                "Re-save the checkpoint with safe_serialization=True."
            )


def verify(folder: str | os.PathLike, name: str = "resume") -> dict:
    """The checkpoint's manifest, after checking every file against it; CheckpointError otherwise."""
    folder = Path(folder)
    if folder.is_file():
        if folder.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(f"{name}: {folder} is a pickle file; gen resumes only from checkpoint folders with safetensors weights.")
        raise CheckpointError(f"{name}: {folder} is a file; pass a checkpoint folder (checkpoint-N) or 'latest'.")
    if not folder.is_dir():
        raise CheckpointError(f"{name}: no checkpoint folder at {folder}.")
    refuse_pickled_weights(folder, name)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{name}: {folder} has no {MANIFEST}: it is incomplete (a write was interrupted) or not a gen checkpoint.")
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["files"]
        step = int(manifest["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError(f"{name}: {manifest_path} is unreadable; the checkpoint is corrupt.") from None
    actual = {str(p.relative_to(folder)) for p in _files(folder)}
    if actual != set(expected):
        raise CheckpointError(f"{name}: {folder} does not match its manifest (files {sorted(actual ^ set(expected))}); it is corrupt.")
    for rel, info in expected.items():
        path = folder / rel
        if path.stat().st_size != info["bytes"] or _digest(path) != info["sha256"]:
            raise CheckpointError(f"{name}: {path} does not match its manifest; the checkpoint is corrupt.")
    if not any(p.suffix == ".safetensors" or p.name == _DCP_INDEX for p in (folder / r for r in expected)):
        raise CheckpointError(f"{name}: {folder} holds no safetensors weights (nor sharded ones).")
    manifest["step"] = step
    return manifest


def candidates(checkpoints_dir: Path) -> list[Path]:
    """checkpoint-N folders, newest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def latest_valid(checkpoints_dir: Path, warn=print) -> Path | None:
    for folder in candidates(checkpoints_dir):
        try:
            verify(folder)
            return folder
        except CheckpointError as err:
            warn(f"skipping {folder.name}: {err}")
    return None


def written_by_gen(folder: Path) -> bool:
    """A checkpoint-N folder gen wrote: it carries gen's manifest (a user's own folder there does not)."""
    return _NAME.match(folder.name) is not None and (folder / MANIFEST).is_file()


def prune(checkpoints_dir: Path, keep: int | None) -> None:
    """Remove the oldest of gen's checkpoints beyond `keep`, and leftovers of gen's interrupted writes."""
    for leftover in checkpoints_dir.glob(".checkpoint-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    if keep:
        for old in [c for c in candidates(checkpoints_dir) if written_by_gen(c)][keep:]:
            shutil.rmtree(old, ignore_errors=True)


def remove_written(checkpoints_dir: Path) -> None:
    """What an earlier run wrote into checkpoints_dir (its checkpoint-N folders and interrupted writes), for
    --overwrite; the folder itself and anything else in it stay."""
    if not checkpoints_dir.is_dir():
        return
    for folder in [c for c in candidates(checkpoints_dir) if written_by_gen(c)] + list(checkpoints_dir.glob(".checkpoint-*.tmp")):
        shutil.rmtree(folder, ignore_errors=True)


def save(accelerator, checkpoints_dir: Path, step: int, epoch: int, keep: int | None, files: dict | None = None) -> Path:
    """All processes call this; the folder appears complete under its final name or not at all. `files`:
    JSON documents (name -> data) the run keeps with its state, such as the loss curve so far."""
    final = checkpoints_dir / f"checkpoint-{step}"
    tmp = checkpoints_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    except Exception as err:
        from gen.errors import WriteError
        from gen.io import is_write_failure

        if is_write_failure(err):
            shutil.rmtree(tmp, ignore_errors=True)
            raise WriteError(
                f"{final}: could not be written ({str(err).splitlines()[0]}); the earlier checkpoints are kept. "
                "Free space on that disk (or lower --checkpoints-total-limit) and resume with --resume latest."
            ) from None
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, data in (files or {}).items():
            write_json(tmp / name, data)
        write_manifest(tmp, step, epoch)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune(checkpoints_dir, keep)
    accelerator.wait_for_everyone()
    return final
