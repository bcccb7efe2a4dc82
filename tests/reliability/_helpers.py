"""Helpers shared by the reliability tests: reading a cache back raw and checking it against the provider."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cachedembed.stores import Store, close_all
from cachedembed.stores.base import ExportedEntry
from cachedembed.usage import UsageDelta

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: subprocesses get it as PYTHONPATH so they run this checkout's code."""


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must import this checkout of cachedembed."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


PYTHON = sys.executable


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
    name = f"rel_{uuid.uuid4().hex[:12]}"
    if backend == "postgresql":
        import psycopg

        admin = "host=127.0.0.1 port=5432 user=postgres dbname=test"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    import pymysql

    server = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        server.cursor().execute(f"CREATE DATABASE {name}")
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        close_all()
        server.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        server.close()
