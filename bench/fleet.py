"""Provider calls per unique text when a fleet of workers shares one cache, with and without leases.

Eight processes of four threads each embed random, heavily overlapping text sets (the
reliability tests' worker, ``tests/reliability/_worker.py``) through one SQLite file,
PostgreSQL database or Redis prefix, with a provider that takes 50 ms per call. Without
leases, processes that miss the same text at once each pay for it; with them, exactly
one does. Then a worker holding leases (its provider call in flight) is SIGKILLed: the
others take over once its lease (2 s here) runs out, and the time from the kill until the
last of them finished is reported next to the lease. Run standalone (``python bench/fleet.py``, prints one JSON line) or call
:func:`run` from the benchmark suite.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The same workers and throwaway databases the reliability tests use.
from tests.reliability._fleet import SHARED, kill_a_lease_holder  # noqa: E402
from tests.reliability._helpers import fresh_cache_url, run_workers  # noqa: E402

PROCESSES, THREADS, CALLS = 8, 4, 6
LATENCY = 0.05
BACKENDS = ("sqlite", "postgresql", "redis")
KILL_LEASE = 2.0


def per_unique_text(url: str, logs: Path, lease: str) -> tuple[float, float]:
    """(provider calls per unique text, wall seconds) of one fleet run on ``url``."""
    started = time.perf_counter()
    results = run_workers(
        url, logs, PROCESSES, THREADS, CALLS, "--lease", lease, "--latency", str(LATENCY)
    )
    seconds = time.perf_counter() - started
    paid = Counter(t for r in results for t in r["provider_texts"])
    assert all(r["mismatches"] == 0 for r in results)
    return sum(paid.values()) / len(paid), seconds


def killed_holder(where: Path, backend: str) -> dict[str, float]:
    """Seconds from SIGKILLing a lease holder until the other workers finished, and what they paid."""
    where.mkdir(parents=True)
    with fresh_cache_url(backend, where) as url:
        outcome = kill_a_lease_holder(url, where / "logs", KILL_LEASE)
    assert outcome.held and outcome.exitcodes == [0] * len(outcome.exitcodes)
    assert all(r["mismatches"] == [] for r in outcome.results)
    paid = Counter(t for r in outcome.results for t in r["provider_texts"])
    return {
        "kill_lease_s": KILL_LEASE,
        "kill_to_done_s": round(outcome.seconds, 2),
        "kill_calls_per_text": sum(paid[t] for t in SHARED) / len(SHARED),
    }


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"workers": f"{PROCESSES}x{THREADS}", "provider_latency_s": LATENCY}
    with tempfile.TemporaryDirectory(prefix="cachedembed-fleet-") as tmp:
        for backend in BACKENDS:
            row: dict[str, float] = {}
            for name, lease in (("no_leases", "0"), ("leases", "30")):
                where = Path(tmp) / backend / name
                where.mkdir(parents=True)
                with fresh_cache_url(backend, where) as url:
                    ratio, seconds = per_unique_text(url, where / "logs", lease)
                row[name] = round(ratio, 3)
                row[f"{name}_s"] = round(seconds, 2)
            row.update(killed_holder(Path(tmp) / backend / "kill", backend))
            out[backend] = row
    return out


if __name__ == "__main__":
    print(json.dumps(run()))
