"""Real resource faults for the reliability tests: a full disk and a read-only cache.

As root (CI containers, this machine) they are made for real with a tiny tmpfs and a
read-only bind mount, because root ignores file permissions; as an ordinary user a
read-only cache is a plain ``chmod``, and a full disk cannot be made without root.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@contextmanager
def small_disk(path: Path, size: str = "16M") -> Iterator[Path]:
    """A real filesystem of ``size`` bytes at ``path`` (a tmpfs), unmounted afterwards."""
    if not IS_ROOT:
        pytest.skip(
            "a real full disk needs root (a tmpfs mount); the SQLite max_page_count test covers non-root runs"
        )
    path.mkdir()
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; delete the file to free the space again."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        while chunk:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
    return filler


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` (a file or a folder) read-only for this process, for real."""
    if IS_ROOT:
        _mount("--bind", str(path), str(path))
        try:
            _mount("-o", "remount,ro,bind", str(path))
            yield
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod(mode & ~0o222)
    try:
        yield
    finally:
        path.chmod(mode)
