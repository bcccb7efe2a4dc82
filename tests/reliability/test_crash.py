"""SIGKILL a writer at random moments, over and over, and check what it leaves behind.

The child (``_worker.crash``, forked) stores new texts (with their text, so every entry can be
checked) mixed with hits, as fast as it can. After each kill the cache must open without
any repair step, pass SQLite's integrity check, hold only entries that decode to exactly
the provider's vector for their text, and its miss counters must match the entries: they
commit in the same transaction, so stats are never ahead of (or behind) the data.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from cachedembed.stores import open_store
from tests.conftest import fake_vector
from tests.reliability._helpers import all_entries, same_bits, stats_total
from tests.reliability._worker import crash

DIM = 32


def kill_while_writing(url: str, rep: int, rng: random.Random) -> None:
    # fork, not a fresh interpreter: the child starts in milliseconds with everything
    # imported, so the kill budget goes to writing, not to starting Python.
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=crash, args=(url, rep, DIM, ready))
    child.start()
    try:
        assert ready.wait(30), "the child never opened the cache"
        time.sleep(rng.uniform(0.0, 0.25))
        assert child.is_alive()  # still writing when killed
    finally:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(30)
    assert child.exitcode == -signal.SIGKILL


def check_cache(url: str, sqlite_file: Path | None, rep: int, full: bool) -> int:
    """Check the cache after a kill; ``full`` decodes every entry, else the newest rep's and a sample."""
    if sqlite_file is not None:
        with sqlite3.connect(sqlite_file) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = open_store(url, shared=False)  # a normal open: no repair, no special flag
    try:
        entries = all_entries(store)
        assert len({e.text for e in entries}) == len(entries)
        # Every miss was paid for by exactly one entry written in the same transaction.
        assert stats_total(store).misses == len(entries)
        if not full:  # the killed child's own entries (torn writes would be there) and a sample
            rng = random.Random(rep)
            newest = [e for e in entries if e.text is not None and e.text.startswith(f"rep {rep} ")]
            entries = newest + rng.sample(entries, min(500, len(entries)))
        for e in entries:
            assert e.text is not None
            assert same_bits(np.frombuffer(e.vec, "<f4"), fake_vector(e.text, DIM, "fake-1")), (
                e.text
            )
        return len(entries) if full else stats_total(store).misses
    finally:
        store.close()


def crash_repeatedly(tmp_path: Path, backend: str, reps: int) -> None:
    sqlite_file = tmp_path / "cache.db" if backend == "sqlite" else None
    url = f"sqlite:///{sqlite_file}" if sqlite_file else f"diskcache://{tmp_path / 'dc'}"
    rng = random.Random(20261124)
    seen = 0
    for rep in range(reps):
        kill_while_writing(url, rep, rng)
        count = check_cache(url, sqlite_file, rep, full=rep == reps - 1)
        assert count >= seen  # nothing committed is ever lost
        seen = count
    assert seen > 0  # the children really wrote


@pytest.mark.parametrize(("backend", "reps"), [("sqlite", 20), ("diskcache", 8)])
def test_sigkill_while_writing_leaves_a_consistent_cache(
    tmp_path: Path, backend: str, reps: int
) -> None:
    crash_repeatedly(tmp_path, backend, reps)


@pytest.mark.soak
@pytest.mark.parametrize(("backend", "reps"), [("sqlite", 200), ("diskcache", 100)])
def test_sigkill_soak(tmp_path: Path, backend: str, reps: int) -> None:
    crash_repeatedly(tmp_path, backend, reps)


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_sigkill_while_creating_a_cache(tmp_path: Path, backend: str) -> None:
    # Killed anywhere between creating the file, running the migrations and the first
    # writes: whatever is left must open as a working cache.
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(7)
    for rep in range(10):
        sqlite_file = tmp_path / f"fresh{rep}.db" if backend == "sqlite" else None
        url = (
            f"sqlite:///{sqlite_file}" if sqlite_file else f"diskcache://{tmp_path / f'fresh{rep}'}"
        )
        child = ctx.Process(target=crash, args=(url, rep, DIM, None))
        child.start()
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(30)
        check_cache(url, sqlite_file, rep, full=True)
