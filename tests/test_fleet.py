"""How a call treats texts leased elsewhere: it waits and serves the holder's entry, takes over an expired
lease, keeps its own leases renewed through a long provider call, and never fails because leases do.

"Elsewhere" is a second store object on the same SQLite file (its own in-process
single-flight, as in another process) or a lease claimed directly under another owner.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.errors import ConfigurationError, StoreError
from cachedembed.keys import ItemHasher
from cachedembed.stores import Store, close_all, open_store
from tests.conftest import FakeEF, fake_vector
from tests.reliability._faults import read_only

ELSEWHERE = "other-host:1:elsewhere"


def leased_elsewhere(url: str, texts: list[str], ttl_ms: int) -> tuple[Store, int, list[int]]:
    """Lease ``texts`` (of the ``test`` namespace) to another owner; (store, namespace id, ids)."""
    store = open_store(url, shared=False)
    spec = Cached(FakeEF(), store, namespace="test").spec("document")
    ns = store.namespace(spec)
    ids = ItemHasher(spec).text_key_arrays(texts)[0].tolist()
    assert store.claim_leases(ns.id, ids, ELSEWHERE, ttl_ms) == [True] * len(ids)
    return store, ns.id, ids


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["result"] = fn()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_text_leased_elsewhere_is_served_from_its_holders_entry(sqlite_url: str) -> None:
    store, ns_id, ids = leased_elsewhere(sqlite_url, ["x"], 60_000)
    waiter_ef = FakeEF()
    waiter = Cached(waiter_ef, open_store(sqlite_url, shared=False), namespace="test")
    thread, out = in_thread(lambda: waiter.embed(["x", "y"]))
    thread.join(0.5)
    assert thread.is_alive()  # it embedded "y", and waits for "x"
    # The holder stores "x" and releases its lease.
    Cached(FakeEF(), store, namespace="test", lease=0).embed(["x"])
    store.release_leases(ns_id, ids, ELSEWHERE)
    thread.join(30)
    assert waiter_ef.texts_embedded == ["y"]  # never paid for "x"
    assert np.array_equal(out["result"], np.stack([fake_vector(t, 8, "fake-1") for t in "xy"]))
    usage = waiter.session_stats()
    assert (usage["hits"], usage["misses"]) == (1, 1)


def test_an_expired_lease_is_taken_over_and_embedded_once(sqlite_url: str) -> None:
    leased_elsewhere(sqlite_url, ["x", "z"], 300)  # its holder died: nobody renews it
    ef = FakeEF()
    wrapper = Cached(ef, sqlite_url, namespace="test")
    thread, out = in_thread(lambda: wrapper.embed(["x", "z"]))
    thread.join(30)
    assert not thread.is_alive()
    assert ef.calls == [["x", "z"]]
    assert np.array_equal(out["result"], np.stack([fake_vector(t, 8, "fake-1") for t in "xz"]))


class GatedEF(FakeEF):
    """Holds each provider call until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, input: list[str]) -> list[Any]:
        self.entered.set()
        assert self.gate.wait(30)
        return super().__call__(input)


def test_a_long_provider_call_keeps_its_leases(sqlite_url: str) -> None:
    ef = GatedEF()
    wrapper = Cached(ef, sqlite_url, namespace="test", lease=0.3)
    thread, out = in_thread(lambda: wrapper.embed(["long"]))
    assert ef.entered.wait(30)
    time.sleep(1.0)  # over three leases' time: only renewals keep it
    spec = wrapper.spec("document")
    ns = wrapper.store.namespace(spec)
    ids = ItemHasher(spec).text_key_arrays(["long"])[0].tolist()
    probe = open_store(sqlite_url, shared=False)
    assert probe.claim_leases(ns.id, ids, ELSEWHERE, 60_000) == [False]
    ef.gate.set()
    thread.join(30)
    assert np.array_equal(out["result"][0], fake_vector("long", 8, "fake-1"))
    # Released once stored: the next claimer gets it at once.
    assert probe.claim_leases(ns.id, ids, ELSEWHERE, 60_000) == [True]


def test_leases_off_embeds_what_another_process_holds(sqlite_url: str) -> None:
    leased_elsewhere(sqlite_url, ["x"], 60_000)
    ef = FakeEF()
    Cached(ef, sqlite_url, namespace="test", lease=0).embed(["x"])
    assert ef.calls == [["x"]]


def test_a_cache_that_cannot_take_leases_still_serves_exact_vectors(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    url = f"sqlite:///{folder / 'cache.db'}"
    Cached(FakeEF(), url, namespace="test").embed(["old"])
    close_all()
    with read_only(folder):
        store = open_store(url, shared=False)
        with pytest.raises(StoreError):
            store.claim_leases(1, [1], ELSEWHERE, 60_000)
        ef = FakeEF()
        got = Cached(ef, store, namespace="test").embed(["old", "new"])
        store.close()
    assert ef.calls == [["new"]]
    assert np.array_equal(got, np.stack([fake_vector(t, 8, "fake-1") for t in ("old", "new")]))


@pytest.mark.parametrize("lease", [-1, "30", True, float("nan")])
def test_a_lease_that_is_not_a_number_of_seconds_is_refused(lease: Any, sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="lease must be a number of seconds"):
        Cached(FakeEF(), sqlite_url, lease=lease)
