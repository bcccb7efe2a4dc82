"""Warm-hit throughput of a shared PostgreSQL, MariaDB or Redis cache over loopback, next to SQLite.

A warm hit is the cache's whole job for a re-index: 20,000 already-cached 384-d texts
in one call. On SQLite that is a local B-tree read; on a server it is one lookup
statement and ~30 MB of vectors over a socket. Run standalone
(``python bench/sql_network.py``, prints one JSON line) or call :func:`run` from the
benchmark suite. Each server (PostgreSQL on 127.0.0.1:5432, MariaDB on :3306, as in
the tests; Redis on :6379) gets a throwaway database (Redis: key prefix), dropped afterwards.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The same throwaway-database helpers the shared-cache tests use.
from tests.stores.servers import mariadb_database, postgres_database, redis_prefix  # noqa: E402

N = 20_000
DIM = 384
REPEATS = 5


class InstantProvider:
    """A Chroma-protocol embedding function returning precomputed vectors: only the cache is timed."""

    def __init__(self, texts: list[str]) -> None:
        rng = np.random.default_rng(1)
        self._vectors = dict(
            zip(texts, rng.standard_normal((len(texts), DIM)).astype(np.float32), strict=True)
        )

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return [self._vectors[t] for t in input]

    @staticmethod
    def name() -> str:
        return "bench-instant"

    def get_config(self) -> dict[str, Any]:
        return {"dim": DIM}


def texts(n: int = N) -> list[str]:
    return [
        f"document {i}: the quick brown fox jumps over the lazy dog {i * 7919}" for i in range(n)
    ]


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'cache.db'}"


def measure(url: str, corpus: list[str], repeats: int = REPEATS) -> dict[str, float]:
    """Fill the cache once (cold), then time whole-corpus warm calls; best of ``repeats``."""
    from cachedembed import Cached
    from cachedembed.stores import close_all

    try:
        wrapper = Cached(InstantProvider(corpus), cache=url)
        start = time.perf_counter()
        cold = wrapper(corpus)
        cold_s = time.perf_counter() - start
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            warm = wrapper(corpus)
            best = min(best, time.perf_counter() - start)
        if any(a.tobytes() != b.tobytes() for a, b in zip(cold, warm, strict=True)):
            raise AssertionError(f"{url}: warm vectors differ from cold ones")
        stats = wrapper.stats()
        if stats["misses"] != len(corpus) or stats["hits"] != repeats * len(corpus):
            raise AssertionError(f"{url}: unexpected stats {stats}")
    finally:
        close_all()
    return {
        "cold_texts_per_s": round(len(corpus) / cold_s),
        "warm_hit_texts_per_s": round(len(corpus) / best),
        "warm_hit_seconds": round(best, 4),
    }


BACKENDS: dict[str, Callable[[], Any]] = {
    "sqlite": sqlite_database,
    "postgresql": postgres_database,
    "mariadb": mariadb_database,
    "redis": redis_prefix,
}


def run(
    n: int = N, backends: tuple[str, ...] = ("sqlite", "postgresql", "mariadb", "redis")
) -> dict[str, Any]:
    """Warm-hit throughput per backend for ``n`` cached 384-d texts in one call."""
    corpus = texts(n)
    result: dict[str, Any] = {"benchmark": "sql_network_warm_hit", "texts": n, "dim": DIM}
    for name in backends:
        with BACKENDS[name]() as url:
            result[name] = measure(url, corpus)
    if "sqlite" in result and "postgresql" in result:
        result["postgresql_vs_sqlite"] = round(
            result["postgresql"]["warm_hit_texts_per_s"] / result["sqlite"]["warm_hit_texts_per_s"],
            3,
        )
    if "redis" in result and "postgresql" in result:
        result["redis_vs_postgresql"] = round(
            result["redis"]["warm_hit_texts_per_s"] / result["postgresql"]["warm_hit_texts_per_s"],
            3,
        )
    return result


if __name__ == "__main__":
    print(json.dumps(run()))
