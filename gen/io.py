"""Atomic writes and safe weight loading.

Every file gen writes appears whole or not at all: it is written to a temporary name in the same folder
and renamed over the target (`os.replace` is atomic on one filesystem). Folders (checkpoints, saved
pipelines) are built under a temporary name and renamed into place. Weights load through safetensors
only; pickle files are refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from gen.errors import ArgumentError, MissingFileError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _umask_mode(base: int) -> int:
    """The mode a plain open()/mkdir() would give: tempfile creates owner-only files and folders."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) and rename the result onto path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _umask_mode(0o666))
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")


def save_image(path, image) -> Path:
    """Save a PIL image atomically (format from the target's suffix)."""
    fmt = Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def save_safetensors(path, tensors: dict, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name; on success it replaces `path` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _umask_mode(0o777))
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


RUN_MARKER = ".gen-run.json"


def check_output_dir(path: str | os.PathLike, kind: str, resume: bool = False, overwrite: bool = False, name: str = "output_dir") -> Path:
    """Check, before any work, that a run of `kind` may write into path (`mark_output_dir` then claims it).

    An empty or new folder is taken. A folder an earlier run of the same kind wrote (its RUN_MARKER says so)
    is taken only to resume or overwrite it; anything else in it is refused, so nothing a user owns is
    deleted or replaced unasked."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"{name}: {path} exists and is a file; pass a folder.")
    if path.is_dir() and any(path.iterdir()):
        marker = path / RUN_MARKER
        try:
            previous = json.loads(marker.read_text()).get("kind") if marker.is_file() else None
        except (OSError, ValueError):
            previous = None
        if previous != kind:
            found = sorted(p.name for p in path.iterdir())[:4]
            raise ArgumentError(f"{name}: {path} already holds files a gen {kind} run did not write ({', '.join(found)}, ...); choose a new or empty folder.")
        if not (resume or overwrite):
            raise ArgumentError(f"{name}: {path} holds an earlier {kind} run; pass --resume latest to continue it or --overwrite to replace it.")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}: {existing} is not writable; choose a folder you can write to.")
    return path


def mark_output_dir(path: str | os.PathLike, kind: str) -> Path:
    """Create path if needed and mark it as a `kind` run's folder (see `check_output_dir`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / RUN_MARKER, {"kind": kind})
    return path


def free_name(path: str | os.PathLike) -> Path:
    """path, or path with -1, -2, ... before its suffix: the first name that holds nothing yet (side files
    such as a sample's JSON never replace a file the user has)."""
    path = Path(path)
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def save_into(folder: str | os.PathLike, save: Callable[[Path], None], last: str | None = None) -> Path:
    """Call save(tmp) on a staging folder beside `folder`, then move what it wrote into folder, replacing
    only the entries of the same name (the file named `last`, e.g. model_index.json, moves last: a folder
    without it was never completely written). Other files in folder are left alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / ".staged"
    with atomic_directory(staged) as tmp:
        save(tmp)
    if last is not None and (folder / last).exists():
        (folder / last).unlink()
    for entry in sorted(staged.iterdir(), key=lambda p: p.name == last):
        target = folder / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    staged.rmdir()
    return folder


def inside(folder: str | os.PathLike, name: str, argument: str = "name") -> Path:
    """folder / name, refusing names that would land outside folder (absolute paths, '..', symlinks out)."""
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(root):
        raise ArgumentError(f"{argument}: {name!r} would write outside the output folder {root}; give a plain file name.")
    return target


def refuse_pickle(path: str | os.PathLike, name: str = "path") -> None:
    """A clear error for pickle-format weights (they can run code on load)."""
    path = Path(path)
    candidates = [path] if path.is_file() else list(path.rglob("*")) if path.is_dir() else []
    pickled = [p for p in candidates if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise ArgumentError(
            f"{name}: {pickled[0]} is a pickle file; gen loads weights through safetensors only (pickle can run "
            "arbitrary code). Convert it once in a trusted environment with safetensors.torch.save_file."
        )


def load_safetensors(path: str | os.PathLike, name: str = "path") -> dict:
    """Load a .safetensors file; a clear error for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    refuse_pickle(path, name)
    if not path.is_file():
        raise MissingFileError(f"{name}: no file at {path}.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArgumentError(f"{name}: {path} is not a readable safetensors file ({err}); it may be truncated or corrupt.") from None
