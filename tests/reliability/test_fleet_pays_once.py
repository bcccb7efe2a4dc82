"""A fleet of processes on one cache pays the provider exactly once per text, even when a worker dies mid-call.

Processes lease the texts they embed in the shared store (SQLite file, diskcache folder,
PostgreSQL, MariaDB, Redis); the others wait for the entries instead of paying again, and
take over the leases of a worker that was SIGKILLed while its provider call ran.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cachedembed.stores import open_store
from tests.reliability._fleet import SHARED, SURVIVORS, kill_a_lease_holder
from tests.reliability._helpers import all_entries, fresh_cache_url, run_workers

BACKENDS = ["sqlite", "diskcache", "postgresql", "mariadb", "redis"]
LEASE = 2.0
"""Seconds: short, so a killed worker's leases run out quickly."""


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_processes_of_four_threads_pay_once_per_text(backend: str, tmp_path: Path) -> None:
    with fresh_cache_url(backend, tmp_path) as url:
        results = run_workers(url, tmp_path / "logs", 8, 4, 6)
        assert all(r["mismatches"] == 0 for r in results)  # every vector the provider's
        paid = Counter(t for r in results for t in r["provider_texts"])
        assert [t for t, n in paid.items() if n > 1] == []  # no text paid for twice
        entries = all_entries(open_store(url))
        assert sorted(e.text or "" for e in entries) == sorted(paid)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_killed_while_holding_leases_delays_the_others_only_by_its_lease(
    backend: str, tmp_path: Path
) -> None:
    with fresh_cache_url(backend, tmp_path) as url:
        outcome = kill_a_lease_holder(url, tmp_path / "logs", LEASE)
    assert outcome.held  # killed in mid-call, holding every shared text's lease
    assert outcome.exitcodes == [0] * SURVIVORS  # the others finished
    assert [r["mismatches"] for r in outcome.results] == [[]] * SURVIVORS
    paid = Counter(t for r in outcome.results for t in r["provider_texts"])
    assert all(paid[t] == 1 for t in SHARED)  # taken over once, not once per survivor
    assert sum(paid.values()) == len(SHARED) + 2 * SURVIVORS
