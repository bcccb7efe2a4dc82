"""The outage machinery on its own: the breaker's probes and the retry buffer's bound.

(What it does for a caller, against real servers stopped mid-run, is in
tests/reliability/test_cache_fails_open.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from cachedembed.errors import StoreError
from cachedembed.stores.base import EntryBatch
from cachedembed.stores.outage import Breaker, Outage, StoreUnavailable

URL = "redis://cache.example:6379/0"


def batch(first_id: int, n: int = 4, dim: int = 8) -> EntryBatch:
    return EntryBatch(
        ids=list(range(first_id, first_id + n)),
        checks=[0] * n,
        vectors=np.zeros((n, dim), dtype=np.float32),
        tokens=[1] * n,
        flags=[0] * n,
    )


def test_a_failing_breaker_lets_one_probe_through_per_wait() -> None:
    breaker = Breaker("reads", first_wait=60.0, max_wait=600.0)
    assert breaker.allow()
    breaker.failed(StoreError(f"cache {URL}: connection refused"))
    assert not breaker.allow() and not breaker.allow()  # within the wait: skipped
    error = breaker.unavailable(URL)
    assert isinstance(error, StoreUnavailable) and isinstance(error, StoreError)
    assert str(error).startswith(
        f"cache {URL}: reads skipped while it is failing (connection refused)"
    )
    breaker.probe_now()
    assert breaker.allow()  # this caller probes ...
    assert not breaker.allow()  # ... and nobody else until its own wait is over
    breaker.succeeded()
    assert breaker.allow() and not breaker.failing


def test_each_failed_probe_doubles_the_wait_up_to_the_cap() -> None:
    breaker = Breaker("writes", first_wait=60.0, max_wait=150.0)
    waits = []
    for _ in range(4):
        breaker.failed(StoreError("down"))
        waits.append(breaker.retry_in())
    assert [round(w, -1) for w in waits] == [60, 120, 150, 150]


def test_a_zero_wait_never_skips_local_stores() -> None:
    breaker = Breaker("writes", first_wait=0.0, max_wait=0.0)
    breaker.failed(StoreError("disk full"))
    assert breaker.failing and breaker.allow() and breaker.allow()


def test_the_retry_buffer_drops_the_oldest_batches_beyond_its_bound_and_counts_them() -> None:
    one = batch(0).vectors.nbytes
    outage = Outage(buffer_bytes=3 * one)
    for start in range(0, 20, 4):  # five batches of four entries; room for three
        outage.keep(1, batch(start))
    health = outage.health()
    assert (health["unsaved_entries"], health["unsaved_bytes"], health["dropped_entries"]) == (
        12,
        3 * one,
        8,
    )
    firsts = []
    while (item := outage.take()) is not None:
        firsts.append(item.batch.ids[0])
    assert firsts == [8, 12, 16]  # oldest first, the two oldest gone
    assert not outage.has_unsaved


def test_a_batch_that_fails_again_goes_back_to_the_front() -> None:
    outage = Outage()
    outage.keep(1, batch(0))
    outage.keep(1, batch(4))
    item = outage.take()
    assert item is not None
    outage.put_back(item)
    again = outage.take()
    assert again is not None and again.batch.ids[0] == 0
    assert outage.health()["unsaved_entries"] == 4


@pytest.mark.parametrize("breaker", ["reads", "writes"])
def test_health_names_the_failing_side_and_its_error(breaker: str) -> None:
    outage = Outage(first_wait=60.0)
    assert outage.health()["status"] == "ok" and outage.health()["error"] is None
    getattr(outage, breaker).failed(StoreError("cache x: refused"))
    health = outage.health()
    assert health["status"] == "failing" and health[breaker] == "failing"
    assert health["error"] == "cache x: refused" and health["since"] is not None
    assert 0 < health["retry_in"] <= 60
