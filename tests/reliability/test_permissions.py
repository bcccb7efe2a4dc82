"""Cache files are private: user-only permissions on every file and folder a cache creates.

Vectors can be inverted back to text, and ``store_text=True`` keeps the text itself, so
a cache is as sensitive as the documents. The tests run under the usual 022 umask, under
which anything not explicitly restricted comes out world-readable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachedembed import Cached
from tests.conftest import FakeEF


@pytest.fixture(autouse=True)
def _ordinary_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_are_user_only(tmp_path: Path) -> None:
    folder = tmp_path / "new-folder"
    db = folder / "cache.db"
    wrapper = Cached(FakeEF(), f"sqlite:///{db}", store_text=True)
    wrapper.embed(["secret text"])  # leaves the WAL and shared-memory files open
    assert mode(folder) == 0o700
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert path.exists(), path
        assert mode(path) == 0o600, path


def test_diskcache_folder_and_files_are_user_only(tmp_path: Path) -> None:
    folder = tmp_path / "dc"
    wrapper = Cached(FakeEF(dim=16384), f"diskcache://{folder}")  # 64 KiB vectors: value files
    wrapper.embed(["one"])
    wrapper.embed(["two", "three"])  # written long after the cache was opened
    paths = [folder, *folder.rglob("*")]
    assert len([p for p in paths if p.suffix == ".val"]) == 3
    for path in paths:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
