"""Helpers shared by the reliability tests: reading a cache back raw and checking it against the provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cachedembed.stores import Store
from cachedembed.stores.base import ExportedEntry
from cachedembed.usage import UsageDelta

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: subprocesses get it as PYTHONPATH so they run this checkout's code."""


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must import this checkout of cachedembed."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


PYTHON = sys.executable


def run_workers(
    url: str, logs: Path, processes: int, threads: int, calls: int, *options: str
) -> list[dict[str, Any]]:
    """Run ``processes`` ``_worker.py concurrency`` children at once on ``url``; their logs.

    Each fails the test if it raised anything or saw a vector that is not the provider's.
    ``options`` go to every worker's command line (e.g. ``--lease 0``).
    """
    (logs / "ready").mkdir(parents=True)  # the workers' start barrier
    children = [
        subprocess.Popen(
            [
                PYTHON,
                str(ROOT / "tests/reliability/_worker.py"),
                "concurrency",
                "--url",
                url,
                "--proc",
                str(p),
                "--threads",
                str(threads),
                "--calls",
                str(calls),
                "--processes",
                str(processes),
                "--log",
                str(logs / f"{p}.json"),
                *options,
            ],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    results = []
    for p, child in enumerate(children):
        _out, err = child.communicate(timeout=120)
        log = logs / f"{p}.json"
        result = json.loads(log.read_text()) if log.exists() else {"errors": [err]}
        assert result["errors"] == [], result["errors"][0]  # e.g. "database is locked"
        assert child.returncode == 0 and "Traceback" not in err, err
        results.append(result)
    return results


def stats_total(store: Store) -> UsageDelta:
    """Every stats row of ``store`` (all namespaces and days) added up, buffered hits included."""
    store.flush()
    total = UsageDelta()
    for _ns, _day, delta in store.stats_rows():
        total.add(delta)
    return total


def all_entries(store: Store) -> list[ExportedEntry]:
    """Every entry of every namespace, read through the store's export path."""
    return [e for ns in store.namespaces() for batch in store.iter_entries(ns.id) for e in batch]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the two float32 arrays are bit-identical (NaN-safe, -0.0 distinct from 0.0)."""
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    b32 = np.ascontiguousarray(b, dtype=np.float32)
    return a32.shape == b32.shape and bool((a32.view(np.uint32) == b32.view(np.uint32)).all())


@contextmanager
def fresh_cache_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty cache on ``backend``; server databases are created and dropped here."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'cache.db'}"
        return
    if backend == "diskcache":
        yield f"diskcache://{tmp_path / 'dc'}"
        return
    if backend == "redis":
        from tests.stores.servers import redis_prefix

        with redis_prefix() as url:
            yield url
        return
    from tests.stores.servers import server_database

    with server_database(backend) as url:
        yield url
