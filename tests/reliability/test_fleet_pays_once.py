"""A fleet of processes on one cache pays the provider exactly once per text, even when a worker dies mid-call.

Processes lease the texts they embed in the shared store (SQLite file, PostgreSQL, MariaDB,
Redis); the others wait for the entries instead of paying again, and take over the leases
of a worker that was SIGKILLed while its provider call ran.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cachedembed import Cached
from cachedembed.keys import ItemHasher
from cachedembed.stores import close_all, open_store
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import all_entries, fresh_cache_url, run_workers, same_bits

BACKENDS = ["sqlite", "postgresql", "mysql", "redis"]
FORK = mp.get_context("fork")
LEASE = 2.0
"""Seconds: short, so a killed worker's leases run out quickly."""
SHARED = [f"shared text {i} ü" for i in range(30)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_processes_of_four_threads_pay_once_per_text(backend: str, tmp_path: Path) -> None:
    with fresh_cache_url(backend, tmp_path) as url:
        results = run_workers(url, tmp_path / "logs", 8, 4, 6)
        assert all(r["mismatches"] == 0 for r in results)  # every vector the provider's
        paid = Counter(t for r in results for t in r["provider_texts"])
        assert [t for t, n in paid.items() if n > 1] == []  # no text paid for twice
        entries = all_entries(open_store(url))
        assert sorted(e.text or "" for e in entries) == sorted(paid)


class BlockingEF(FakeEF):
    """A provider that never answers (until its process is killed)."""

    def __init__(self, entered: Any) -> None:
        super().__init__(dim=16)
        self.entered = entered

    def __call__(self, input: list[str]) -> list[Any]:
        self.entered.set()
        time.sleep(600)
        raise AssertionError("the victim should have been killed")


def victim(url: str, entered: Any) -> None:
    Cached(BlockingEF(entered), url, namespace="fleet", lease=LEASE).embed(SHARED)


def survivor(url: str, k: int, log: Path) -> None:
    """Two threads embed the shared texts (in their own orders) and some of their own."""
    ef = FakeEF(dim=16)
    wrapper = Cached(ef, url, namespace="fleet", lease=LEASE)
    bad: list[str] = []

    def run(t: int) -> None:
        texts = [*random.Random(k * 10 + t).sample(SHARED, len(SHARED)), f"own {k} {t}"]
        got = wrapper.embed(texts)
        bad.extend(x for x, g in zip(texts, got) if not same_bits(g, fake_vector(x, 16, "fake-1")))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_all()
    log.write_text(json.dumps({"provider_texts": ef.texts_embedded, "mismatches": bad}))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
def test_a_worker_killed_while_holding_leases_delays_the_others_only_by_its_lease(
    backend: str, tmp_path: Path
) -> None:
    with fresh_cache_url(backend, tmp_path) as url:
        probe = Cached(FakeEF(dim=16), url, namespace="fleet")
        spec = probe.spec("document")
        ns = probe.store.namespace(spec)
        ids = ItemHasher(spec).text_key_arrays(SHARED)[0].tolist()

        entered = FORK.Event()
        doomed = FORK.Process(target=victim, args=(url, entered))
        doomed.start()
        assert entered.wait(30)  # its provider call runs: it holds every shared text's lease
        assert probe.store.claim_leases(ns.id, ids, "probe", 1) == [False] * len(ids)

        logs = [tmp_path / f"survivor{k}.json" for k in range(3)]
        others = [FORK.Process(target=survivor, args=(url, k, logs[k])) for k in range(3)]
        for p in others:
            p.start()
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join()
        for p in others:
            p.join(60)  # lease + a second in practice; generous here
            assert p.exitcode == 0
        results = [json.loads(log.read_text()) for log in logs]
        assert [r["mismatches"] for r in results] == [[], [], []]
        paid = Counter(t for r in results for t in r["provider_texts"])
        assert all(paid[t] == 1 for t in SHARED)  # taken over once, not once per survivor
        assert sum(paid.values()) == len(SHARED) + 6
