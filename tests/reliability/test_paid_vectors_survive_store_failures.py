"""A cache that cannot be written never costs the caller the vectors it paid for.

With the default ``on_store_error="warn"``, a write that fails after the provider answered
(the disk is full, the database refuses it) still returns the provider's exact vectors:
the failure is logged once with its remedy and counted in ``stats()["store_errors"]``;
batches stored before it stay; and the batches it could not store are kept in memory
(bounded) and written once the disk has room, with the next successful write. ``on_store_error="raise"`` keeps
the strict behaviour: the failed write raises :class:`StoreError` with the remedy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached, StoreError
from cachedembed.errors import ConfigurationError
from cachedembed.stores import SqlStore
from tests.conftest import FakeEF, fake_vector
from tests.reliability._faults import fill, small_disk
from tests.reliability._helpers import all_entries, same_bits

DIM = 64


def texts(prefix: str, n: int = 20) -> list[str]:
    return [f"{prefix} text {i}" for i in range(n)]


def expected(ef: FakeEF, batch: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t, ef.dim, ef.model) for t in batch])


def cache_on(disk: Path, backend: str) -> str:
    return {"sqlite": f"sqlite:///{disk / 'cache.db'}", "diskcache": f"diskcache://{disk / 'dc'}"}[
        backend
    ]


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cachedembed"]


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_full_disk_returns_exact_vectors_and_stores_them_once_there_is_room(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        ef = FakeEF(dim=DIM)
        wrapper = Cached(ef, cache_on(disk, backend))
        first, later, more = texts("first"), texts("later"), texts("more")
        assert same_bits(wrapper.embed(first), expected(ef, first))

        filler = fill(disk)
        caplog.set_level(logging.WARNING, logger="cachedembed")
        result = wrapper.embed_with_usage(later)
        assert same_bits(result.vectors, expected(ef, later))
        assert result.store_errors >= 1
        assert same_bits(wrapper.embed(more), expected(ef, more))
        warned = store_warnings(caplog)
        assert len(warned) == 1, warned  # once per outage, not once per call
        assert "full" in warned[0] and "Remedy: free disk space" in warned[0]
        assert wrapper.stats()["store_errors"] >= 2

        ef.calls.clear()
        assert same_bits(wrapper.embed(first), expected(ef, first))
        assert ef.calls == []  # the batch stored before the disk filled up stayed

        filler.unlink()
        assert same_bits(wrapper.embed(later), expected(ef, later))
        # Embedded again and stored now, unless the background flusher already wrote the
        # batch kept from the outage.
        assert set(ef.texts_embedded) <= set(later)
        assert "writes succeed again" in store_warnings(caplog)[-1]
        ef.calls.clear()
        assert same_bits(wrapper.embed([*later, *more]), expected(ef, [*later, *more]))
        assert ef.calls == []  # the batches kept during the outage were written too
        stored = {e.id for e in all_entries(wrapper.store)}
        assert len(stored) == len(first) + len(later) + len(more)
        wrapper.store.close()


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_raise_mode_reports_a_full_disk_as_store_error_with_the_remedy(
    backend: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        ef = FakeEF(dim=DIM)
        wrapper = Cached(ef, cache_on(disk, backend), on_store_error="raise")
        wrapper.embed(texts("first"))
        fill(disk)
        with pytest.raises(StoreError, match="Remedy: free disk space"):
            wrapper.embed(texts("later"))
        ef.calls.clear()
        wrapper.embed(texts("first"))
        assert ef.calls == []  # earlier batches are kept
        wrapper.store.close()


def test_a_full_sqlite_database_without_root_is_survived_the_same_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # PRAGMA max_page_count makes SQLite refuse to grow the file: a real SQLITE_FULL,
    # reachable without mounting anything. The wrapper uses one connection per thread.
    ef = FakeEF(dim=DIM)
    wrapper = Cached(ef, f"sqlite:///{tmp_path / 'cache.db'}")
    wrapper.embed(texts("first"))
    store = wrapper.store
    assert isinstance(store, SqlStore)
    conn = store._raw().driver_connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    caplog.set_level(logging.WARNING, logger="cachedembed")
    big = texts("later", 300)
    assert same_bits(wrapper.embed(big), expected(ef, big))
    assert "database or disk is full" in store_warnings(caplog)[0]
    assert wrapper.stats()["store_errors"] >= 1

    conn.execute(f"PRAGMA max_page_count = {2**30}")
    ef.calls.clear()
    assert same_bits(wrapper.embed(big), expected(ef, big))
    # The batch that did not fit is embedded again (the last one fitted in free pages).
    assert ef.texts_embedded == big[:256]
    ef.calls.clear()
    wrapper.embed(big)
    assert ef.calls == []


def test_on_store_error_accepts_only_warn_or_raise(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="on_store_error must be 'warn' or 'raise'"):
        Cached(FakeEF(), f"sqlite:///{tmp_path / 'c.db'}", on_store_error="ignore")  # type: ignore[arg-type]
