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

from gen.errors import ArgumentError, MissingFileError, WriteError

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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_write_failure(err):  # a full disk or a quota, reported by the library that wrote: name the file
            raise write_error(path, err) from None
        raise
    return path


def is_write_failure(err: BaseException) -> bool:
    """An error from the file system while writing (OSError, or a writer's own wrapper of one such as
    safetensors' "File too large"), as opposed to a mistake in what was to be written."""
    if isinstance(err, OSError):
        return True
    return type(err).__name__ == "SafetensorError" and any(word in str(err) for word in ("too large", "No space", "Quota", "I/O error", "os error"))


def write_error(path, err: BaseException) -> WriteError:
    return WriteError(
        f"{path}: could not be written ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
        "nothing was replaced. Free space on that disk or choose another folder, then run again."
    )


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
        try:
            yield tmp
        except BaseException as err:
            if is_write_failure(err):
                raise write_error(path, err) from None
            raise
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
RUN_LOCK = ".gen-run.lock"
_HELD_LOCKS: dict[str, int] = {}  # resolved folder -> the open lock file this process holds


def check_writable(path: str | os.PathLike, name: str = "out") -> Path:
    """A folder gen will write into (created when missing): refuse, before any work, a dangling link, a
    file in its place, or a place the user cannot write."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ArgumentError(f"{name}: {path} is a link to {os.readlink(path)}, which does not exist; create its target or choose another folder.")
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"{name}: {path} exists and is not a folder; choose a folder.")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ArgumentError(f"{name}: {existing} is a file, so {path} cannot be created; choose another folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArgumentError(f"{name}: {existing} is not writable; choose a folder you can write to.")
    return path


def is_rank_zero() -> bool:
    """Whether this is the process of rank 0, before any accelerator exists (torchrun and accelerate set RANK)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def lock_output_dir(path: str | os.PathLike, name: str = "output_dir") -> bool:
    """Hold path's run lock (creating path) for as long as this process runs or until `release_output_dir`;
    a second run into the same folder is refused with a line naming the holder. Under torchrun/accelerate
    only the process of rank 0 holds it. The lock file is never deleted (deleting a lock file lets two
    runs each lock a different file of one name). True when this call took the lock."""
    import fcntl
    import socket
    import sys
    import time

    path = Path(path)
    key = str(path.resolve())
    if not is_rank_zero() or key in _HELD_LOCKS:
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ArgumentError(f"{name}: cannot create {path} ({err.strerror or err}); choose a folder you can write to.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ArgumentError(f"{name}: {path} is in use by another gen run ({holder}); wait for it to end or choose another folder.") from None
    os.ftruncate(fd, 0)
    os.pwrite(
        fd,
        json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        ).encode(),
        0,
    )
    _HELD_LOCKS[key] = fd
    return True


def release_output_dir(path: str | os.PathLike) -> None:
    """Let go of the run lock this process holds on path (the file stays; see `lock_output_dir`)."""
    fd = _HELD_LOCKS.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


def _run_files(path: Path) -> list[Path]:
    """What is in a run folder besides gen's own lock."""
    return [p for p in path.iterdir() if p.name != RUN_LOCK]


def check_output_dir(path: str | os.PathLike, kind: str, resume: bool = False, overwrite: bool = False, name: str = "output_dir") -> Path:
    """Check, before any work, that a run of `kind` may write into path, and lock it for this run
    (`lock_output_dir`; `mark_output_dir` then claims it).

    An empty or new folder is taken. A folder an earlier run of the same kind wrote (its RUN_MARKER says so)
    is taken only to resume or overwrite it; anything else in it is refused, so nothing a user owns is
    deleted or replaced unasked."""
    path = check_writable(path, name)
    _check_contents(path, kind, resume, overwrite, name)
    if path.is_dir():  # a new folder is created and locked when the run starts writing (`mark_output_dir`)
        _lock_and_recheck(path, kind, resume, overwrite, name)
    return path


def _lock_and_recheck(path: Path, kind: str, resume: bool, overwrite: bool, name: str) -> None:
    if lock_output_dir(path, name):
        try:  # again under the lock: a run into the same folder may have written between the look and the lock
            _check_contents(path, kind, resume, overwrite, name)
        except ArgumentError:
            release_output_dir(path)
            raise


def _check_contents(path: Path, kind: str, resume: bool, overwrite: bool, name: str) -> None:
    if not (path.is_dir() and _run_files(path)):
        return
    marker = path / RUN_MARKER
    try:
        previous = json.loads(marker.read_text()).get("kind") if marker.is_file() else None
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != kind:
        found = sorted(p.name for p in _run_files(path))[:4]
        raise ArgumentError(f"{name}: {path} already holds files a gen {kind} run did not write ({', '.join(found)}, ...); choose a new or empty folder.")
    if not (resume or overwrite):
        raise ArgumentError(f"{name}: {path} holds an earlier {kind} run; pass --resume latest to continue it or --overwrite to replace it.")


def mark_output_dir(path: str | os.PathLike, kind: str, resume: bool = False, overwrite: bool = False, name: str = "output_dir") -> Path:
    """Create path if needed, lock it (if `check_output_dir` could not: it did not exist yet) and mark it as a
    `kind` run's folder. Main process only."""
    path = Path(path)
    _lock_and_recheck(path, kind, resume, overwrite, name)
    write_json(path / RUN_MARKER, {"kind": kind})
    return path


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
