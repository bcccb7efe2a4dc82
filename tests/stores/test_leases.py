"""Leases on every shared store: one holder per item, only the holder renews or releases, expired leases are taken over.

Run against a SQLite file, a diskcache folder, and real PostgreSQL, MariaDB and Redis
servers (a fresh database or key prefix each). Two owners stand for two processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachedembed.errors import StoreError
from cachedembed.stores import close_all, open_store
from cachedembed.stores.base import Store
from tests.stores.servers import own_redis, server_database

BACKENDS = ["sqlite", "diskcache", "postgresql", "mariadb", "redis"]
A, B = "host-a:101:aaaa", "host-b:202:bbbb"
LONG = 60_000


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    elif request.param == "diskcache":
        yield open_store(f"diskcache://{tmp_path / 'dc'}")
    else:
        with server_database(request.param) as url:
            yield open_store(url)
    close_all()


def taken_over(store: Store, ids: list[int], owner: str, deadline: float = 10.0) -> list[bool]:
    """Claim ``ids`` for ``owner`` until granted (a lease running out) or ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    granted = store.claim_leases(1, ids, owner, LONG)
    while not all(granted) and time.monotonic() < end:
        time.sleep(0.02)
        granted = store.claim_leases(1, ids, owner, LONG)
    return granted


def test_a_free_item_is_leased_to_one_owner_only(store: Store) -> None:
    assert store.shares_leases
    assert store.claim_leases(1, [5, -7, 2**63 - 1], A, LONG) == [True, True, True]
    assert store.claim_leases(1, [5, 6, -7, -(2**63)], B, LONG) == [False, True, False, True]


def test_the_holder_claiming_again_keeps_its_lease(store: Store) -> None:
    assert store.claim_leases(1, [1, 2], A, LONG) == [True, True]
    assert store.claim_leases(1, [2, 1, 3], A, LONG) == [True, True, True]
    assert store.claim_leases(1, [1, 2, 3], B, LONG) == [False, False, False]


def test_leases_are_per_namespace(store: Store) -> None:
    assert store.claim_leases(1, [42], A, LONG) == [True]
    assert store.claim_leases(2, [42], B, LONG) == [True]
    assert store.claim_leases(2, [42], A, LONG) == [False]


def test_only_the_holder_releases_a_lease(store: Store) -> None:
    store.claim_leases(1, [1, 2], A, LONG)
    store.release_leases(1, [1, 2], B)  # not B's: nothing happens
    assert store.claim_leases(1, [1, 2], B, LONG) == [False, False]
    store.release_leases(1, [1], A)
    assert store.claim_leases(1, [1, 2], B, LONG) == [True, False]


def test_an_expired_lease_is_taken_over(store: Store) -> None:
    assert store.claim_leases(1, [10, 11], A, 50) == [True, True]
    assert taken_over(store, [10, 11], B) == [True, True]
    # The new holder has it now: the old one can neither claim nor release it.
    assert store.claim_leases(1, [10], A, LONG) == [False]
    store.release_leases(1, [10, 11], A)
    assert store.claim_leases(1, [10, 11], A, LONG) == [False, False]


def test_a_renewed_lease_outlives_its_first_expiry(store: Store) -> None:
    assert store.claim_leases(1, [20, 21], A, 300) == [True, True]
    store.renew_leases(1, [20], A, LONG)
    store.renew_leases(1, [21], B, LONG)  # not B's: 21 keeps its short lease
    assert taken_over(store, [21], B) == [True]  # so the first expiry has passed
    assert store.claim_leases(1, [20], B, LONG) == [False]


def test_a_large_batch_is_leased_whole(store: Store) -> None:
    ids = list(range(-12_000, 12_000, 2))
    assert all(store.claim_leases(1, ids, A, LONG))
    both = list(range(-12_000, 12_000))
    granted = store.claim_leases(1, both, B, LONG)
    assert granted == [i % 2 == 1 for i in both]
    store.release_leases(1, ids, A)
    assert all(store.claim_leases(1, ids, B, LONG))


def test_a_process_local_store_grants_every_lease() -> None:
    store = open_store("memory://leases")
    assert not store.shares_leases
    assert store.claim_leases(1, [1, 2], A, LONG) == [True, True]
    assert store.claim_leases(1, [1, 2], B, LONG) == [True, True]


def test_a_store_that_fails_raises_only_store_error(tmp_path: Path) -> None:
    with own_redis(str(tmp_path)) as server:
        store = open_store(server.url)
        assert store.claim_leases(1, [1], A, LONG) == [True]
        server.stop()
        for attempt in (
            lambda: store.claim_leases(1, [1], A, LONG),
            lambda: store.renew_leases(1, [1], A, LONG),
            lambda: store.release_leases(1, [1], A),
        ):
            with pytest.raises(StoreError):
                attempt()
