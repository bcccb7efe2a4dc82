"""Buffered accounting shared by every store: hits never fail on a counter flush, and nothing is lost."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from cachedembed.errors import StoreError
from cachedembed.stores.base import PendingStats, Row
from cachedembed.stores.kv import MemoryStore
from cachedembed.usage import UsageDelta


class FlakyFlushStore(MemoryStore):
    """A memory store whose next counter flushes fail, as a locked or unreachable database would."""

    failures = 0

    def _flush_stats(self, stats: PendingStats) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("database unreachable")
        super()._flush_stats(stats)


def test_a_failed_periodic_flush_keeps_the_counters_and_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyFlushStore()
    store.flush_interval = 0.0  # every record() is due to flush
    store.failures = 1
    with caplog.at_level(logging.WARNING, logger="cachedembed"):
        store.record(1, UsageDelta(calls=1, hits=3, tokens_saved=30))
    assert "could not save usage counters yet (OSError: database unreachable" in caplog.text
    assert store.stats_rows() == []
    store.record(1, UsageDelta(calls=1, hits=2, tokens_saved=20))
    ((ns, _day, delta),) = store.stats_rows()
    assert (ns, delta.calls, delta.hits, delta.tokens_saved) == (1, 2, 5, 50)


def test_an_explicit_flush_still_reports_the_failure_as_a_store_error() -> None:
    store = FlakyFlushStore()
    store.record(1, UsageDelta(calls=1))
    store.failures = 1
    with pytest.raises(StoreError, match=r"OSError: database unreachable\. Remedy: "):
        store.flush()
    store.flush()
    assert store.stats_rows()[0][2].calls == 1


class BrokenReadStore(MemoryStore):
    """A memory store whose reads fail with a driver error the backend did not translate."""

    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        raise ConnectionResetError("connection reset by peer")


def test_a_driver_error_escaping_a_backend_hook_reaches_clients_as_a_store_error() -> None:
    store = BrokenReadStore()
    with pytest.raises(
        StoreError, match=r"cache memory://: ConnectionResetError: connection reset"
    ):
        store.lookup(1, [1, 2])
    assert store.outage.reads.failing  # counted as a read failure, like any StoreError
