"""A cache this process cannot write still serves its hits.

A SQLite or diskcache cache whose file, or whole folder, is read-only (a cache baked into
an image, a shared read-only mount) opens without taking a write lock, serves every stored
entry bit for bit, and embeds misses and returns them without storing them, with one
warning that names the remedy. New models on it are served uncached; a damaged entry is
re-embedded and served (it cannot be replaced).

As root, permissions are not enforced, so "read-only" is a read-only bind mount.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached, StoreError
from cachedembed.stores import close_all
from cachedembed.stores.base import EntryBatch
from tests.conftest import FakeEF, fake_vector
from tests.reliability._faults import read_only
from tests.reliability._helpers import same_bits

STORED = [f"stored {i}" for i in range(50)]
NEW = [f"new {i}" for i in range(10)]


def vectors(ef: FakeEF, texts: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t, ef.dim, ef.model) for t in texts])


def build_cache(folder: Path, backend: str = "sqlite") -> str:
    """A cache of STORED in ``folder`` (whose index file is ``folder / "cache.db"``)."""
    if backend == "sqlite":
        folder.mkdir()
    url = f"sqlite:///{folder / 'cache.db'}" if backend == "sqlite" else f"diskcache://{folder}"
    Cached(FakeEF(), url).embed(STORED)
    close_all()  # as a finished job leaves it: no -wal or -shm file
    return url


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_cache_serves_hits_and_returns_misses_unstored(
    what: str, backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cache"
    url = build_cache(folder, backend)
    with read_only(folder / "cache.db" if what == "file" else folder):
        caplog.set_level(logging.WARNING, logger="cachedembed")
        ef = FakeEF()
        wrapper = Cached(ef, url)
        assert same_bits(wrapper.embed(STORED), vectors(ef, STORED))
        assert ef.calls == []

        mixed = [*NEW, *STORED[:5]]
        assert same_bits(wrapper.embed(mixed), vectors(ef, mixed))
        assert ef.texts_embedded == NEW
        assert same_bits(wrapper.embed(NEW), vectors(ef, NEW))
        assert ef.texts_embedded == NEW + NEW  # not stored: a miss every time

        other = FakeEF(model="another-model")
        assert same_bits(Cached(other, url).embed(NEW), vectors(other, NEW))

        warned = [r.getMessage() for r in caplog.records if r.name == "cachedembed"]
        assert len(warned) == 1, warned
        assert "read-only" in warned[0] and "Remedy: make the cache writable" in warned[0]
        assert wrapper.stats()["store_errors"] >= 2
        close_all()


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_raise_mode_refuses_to_embed_misses_it_cannot_store(backend: str, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    url = build_cache(folder, backend)
    with read_only(folder):
        wrapper = Cached(FakeEF(), url, on_store_error="raise")
        wrapper.embed(STORED)  # hits need no write
        with pytest.raises(StoreError, match="read-only"):
            wrapper.embed(NEW)
        close_all()


def test_opening_a_current_cache_takes_no_write_lock(tmp_path: Path) -> None:
    # Another process in the middle of a write holds SQLite's write lock: opening the
    # cache and reading from it must not wait for it (the schema check is a plain read).
    import sqlite3

    url = build_cache(tmp_path / "cache")
    writer = sqlite3.connect(tmp_path / "cache" / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        ef = FakeEF()
        wrapper = Cached(ef, url)
        assert same_bits(wrapper.embed(STORED), vectors(ef, STORED))
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_a_damaged_entry_on_a_read_only_cache_is_served_fresh_not_failed(
    backend: str, tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    url = build_cache(folder, backend)
    ef = FakeEF()
    wrapper = Cached(ef, url)
    damaged = STORED[3]
    (item_id,), (check,) = wrapper._engine.hasher("document").text_key_arrays([damaged])
    ns_id = wrapper.namespaces()[0].id
    wrapper.store.delete(ns_id, [int(item_id)])
    cut = np.zeros((1, 3), dtype=np.float32)  # a vector cut short: 3 of its 8 values
    wrapper.store.write_entries(ns_id, EntryBatch([int(item_id)], [int(check)], cut, [1], [0]))
    close_all()
    with read_only(folder):
        ef = FakeEF()
        wrapper = Cached(ef, url)
        assert same_bits(wrapper.embed(STORED), vectors(ef, STORED))
        assert ef.texts_embedded == [damaged]
        close_all()


def test_a_read_only_folder_without_a_diskcache_cache_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with (
        read_only(folder),
        pytest.raises(StoreError, match=r"read-only for this process and holds no cache"),
    ):
        Cached(FakeEF(), f"diskcache://{folder}")
