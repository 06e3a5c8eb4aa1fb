"""Atomic writes: whole files or none, with the permissions a plain open() would give."""

import os

import pytest

from gen.io import atomic_directory, atomic_write, write_text


def test_atomic_files_and_folders_get_the_umask_mode_not_tempfiles_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "folder") as folder:
            (folder / "b.txt").write_text("y")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
