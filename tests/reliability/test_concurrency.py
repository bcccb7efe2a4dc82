"""Many processes, each with many threads, hammer one cache file at the same time.

The cache is a SQLite file, a diskcache folder, or a PostgreSQL or MariaDB database
(the services `make services` starts). Each worker (``_worker.py concurrency``) embeds random, heavily overlapping text sets and
checks every vector bit for bit against the provider; it logs what it requested and what
reached its provider. Nothing may fail ("database is locked" included), no process may
pay twice for a text, and the stats must add up exactly across processes.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached, ProviderError
from cachedembed._engine import _flight_keys
from cachedembed.stores import open_store
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import (
    all_entries,
    fresh_cache_url,
    run_workers,
    same_bits,
    stats_total,
)

PROCESSES = 4
THREADS = 4
CALLS = 12


@pytest.mark.parametrize("backend", ["sqlite", "diskcache", "postgresql", "mariadb"])
def test_processes_and_threads_share_one_cache(tmp_path: Path, backend: str) -> None:
    with fresh_cache_url(backend, tmp_path) as url:
        check_shared_cache(url, tmp_path)


def check_shared_cache(url: str, tmp_path: Path) -> None:
    # The cache is empty: the processes also race to create its schema.
    results = run_workers(url, tmp_path / "logs", PROCESSES, THREADS, CALLS)

    for r in results:
        assert r["mismatches"] == 0  # every vector bit-identical to the provider's
        # Single-flight plus the re-check after claiming: within one process a text
        # reaches the provider at most once, however many threads want it.
        repeated = [t for t, n in Counter(r["provider_texts"]).items() if n > 1]
        assert repeated == []

    store = open_store(url)
    total = stats_total(store)
    requested = sum(r["requested"] for r in results)
    paid = sum(len(r["provider_texts"]) for r in results)
    assert total.hits + total.misses == requested
    assert total.misses == paid
    assert total.calls == sum(r["calls"] for r in results)
    # Processes may race for a text (each pays once); the cache keeps one entry per text,
    # and it is the provider's vector.
    entries = all_entries(store)
    assert len(entries) == len({t for r in results for t in r["provider_texts"]})
    for e in entries:
        assert e.text is not None
        assert same_bits(fake_vector(e.text, 16, "fake-1"), np.frombuffer(e.vec, "<f4"))


class GatedEF(FakeEF):
    """Blocks any call containing ``gate_text`` until released, then fails it once."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.failed = False

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        if "y" in input and not self.failed:
            self.entered.set()
            assert self.release.wait(10)
            self.failed = True
            raise ProviderError("gated", "quota exceeded", status=429)
        return super().__call__(input)


def test_a_failed_owner_releases_its_texts_and_waiters_see_the_cause(sqlite_url: str) -> None:
    ef = GatedEF()
    wrapper = Cached(ef, sqlite_url, batch_size=10)
    errors: dict[str, BaseException] = {}

    def call(name: str, texts: list[str]) -> None:
        try:
            wrapper.embed(texts)
        except BaseException as exc:
            errors[name] = exc

    owner = threading.Thread(target=call, args=("owner", ["x", "y"]))
    owner.start()
    assert ef.entered.wait(10)  # the owner has claimed x and y and is at the provider
    waiter = threading.Thread(target=call, args=("waiter", ["x", "z"]))
    waiter.start()
    time.sleep(0.2)  # the waiter embeds z itself, then waits for the owner's x
    ef.release.set()
    owner.join(10)
    waiter.join(10)
    assert not owner.is_alive() and not waiter.is_alive()  # nobody hangs on a failed flight
    assert "quota exceeded" in str(errors["owner"]) and "quota exceeded" in str(errors["waiter"])
    assert ef.texts_embedded == ["z"]  # z, embedded by the waiter itself, is cached
    # The failed texts were released: the next call embeds them, exactly once.
    got = wrapper.embed(["x", "y", "z"])
    assert same_bits(got, np.array([fake_vector(t, 8, "fake-1") for t in "xyz"]))
    assert ef.texts_embedded == ["z", "x", "y"]


def _embed_in_child(wrapper: Cached) -> None:
    wrapper.embed(["child text"])  # a miss: its write commits whatever the store has buffered
    wrapper.flush()


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_forked_workers_do_not_commit_the_parents_buffered_counters(
    tmp_path: Path, backend: str
) -> None:
    # multiprocessing's default on Linux (and e.g. DataLoader workers) forks a process
    # that already holds a wrapper with hit counters still buffered in memory.
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if backend == "sqlite"
        else f"diskcache://{tmp_path / 'dc'}"
    )
    wrapper = Cached(FakeEF(), url)
    wrapper.embed(["a", "b"])
    wrapper.embed(["a", "b", "a"])  # 3 hits, buffered
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_embed_in_child, args=(wrapper,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    total = stats_total(wrapper.store)  # the parent flushes its own buffer
    assert (total.hits, total.misses, total.calls) == (3, 3, 3)


class FailsOnText(FakeEF):
    """A call with ``failing`` blocks until released, then fails (once); other calls embed."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing
        self.entered = threading.Event()
        self.release = threading.Event()
        self.failed = False

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        if self.failing in input and not self.failed:
            self.failed = True
            self.entered.set()
            assert self.release.wait(10)
            raise ProviderError("gated", "the owner's own failure", status=500)
        return super().__call__(input)


def test_a_failed_owner_fails_only_the_texts_it_never_finished(sqlite_url: str) -> None:
    """Texts an owner already stored and handed over are no longer its to fail.

    Once ``done`` is resolved, a later caller may claim it (it looked the text up before
    the owner stored it); when the owner then fails on another text, that later claim
    and its waiters are untouched, and ``done`` is never owned by two callers at once.
    """
    ef = FailsOnText("fails")
    wrapper = Cached(ef, sqlite_url, batch_size=1)
    failure: list[BaseException] = []

    def owner() -> None:
        try:
            wrapper.embed(["done", "fails"])
        except ProviderError as exc:
            failure.append(exc)

    thread = threading.Thread(target=owner)
    thread.start()
    assert ef.entered.wait(10)  # "done" is stored and resolved; the owner is stuck on "fails"
    flights = wrapper.store.flights
    ns_id = wrapper._engine.state("document").ns.id
    done_key = _flight_keys(
        ns_id, np.array(wrapper._engine.hasher("document").text_keys(["done"])[0])
    )
    later_owned, _ = flights.claim(done_key)
    _, waiting = flights.claim(done_key)
    assert later_owned == [0] and len(waiting) == 1

    ef.release.set()
    thread.join(10)
    assert not thread.is_alive() and "the owner's own failure" in str(failure[0])
    assert not waiting[0][1].done()  # the later claimant's waiter did not get that failure
    assert flights.claim(done_key)[0] == []  # "done" is still claimed once, not free to claim again
    flights.resolve(done_key, lambda i: "the later claimant's value")
    assert waiting[0][1].result(timeout=1) == "the later claimant's value"
    # "fails" was released: the next call embeds it (and "done" is a hit).
    assert same_bits(
        wrapper.embed(["done", "fails"]),
        np.array([fake_vector(t, 8, "fake-1") for t in ("done", "fails")]),
    )
