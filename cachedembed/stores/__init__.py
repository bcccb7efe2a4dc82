"""Cache stores and the URL scheme that selects one.

==============================================  ==========================================
URL                                             store
==============================================  ==========================================
``sqlite:///path/cache.db`` (the default)       :class:`SqlStore` on a SQLite file
``postgresql+psycopg://user@host/db``           :class:`SqlStore` on PostgreSQL
``mysql+pymysql://user@host/db``                :class:`SqlStore` on MySQL / MariaDB
``diskcache:///path/dir``                       :class:`DiskCacheStore`
``memory://`` (or ``memory://name``)            :class:`MemoryStore`, per process
``redis://[:pw@]host[:port][/db][?prefix=app]``  :class:`RedisStore` (also ``rediss://`` for
                                                TLS, ``valkey://``, ``?ttl=30d``)
==============================================  ==========================================

:func:`open_store` shares one open store per URL and process, so building many wrappers
(Chroma rebuilds its embedding function on every collection operation) costs nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .base import EntryBatch, Namespace, PendingStats, Row, Store
from .urls import (
    PASSWORD_PARAMS,
    REDIS_SCHEMES,
    check_url,
    default_url,
    no_cache_error,
    normalize_url,
    private_url,
    public_url,
    redact_url,
    url_passwords,
)

if TYPE_CHECKING:
    from .kv import DiskCacheStore, MemoryStore
    from .redis import RedisStore
    from .sql import SqlStore

__all__ = [
    "PASSWORD_PARAMS",
    "DiskCacheStore",
    "EntryBatch",
    "MemoryStore",
    "Namespace",
    "PendingStats",
    "RedisStore",
    "Row",
    "SqlStore",
    "Store",
    "check_url",
    "close_all",
    "default_url",
    "no_cache_error",
    "normalize_url",
    "open_store",
    "private_url",
    "public_url",
    "redact_url",
    "url_passwords",
]

_lock = threading.Lock()
_open: dict[tuple[str, int], Store] = {}


def open_store(url: str | None = None, *, shared: bool = True, create: bool = True) -> Store:
    """Open (or reuse) the store for ``url``; ``None`` means :func:`default_url`.

    With ``create=False`` (read-only commands) a cache that does not exist yet is not
    created: :class:`~cachedembed.errors.StoreError` says "no cache at ..." instead.
    """
    url = normalize_url(url or default_url())
    if not shared:
        return _create(url, create)
    key = (url, os.getpid())
    store = _open.get(key)
    if store is None:
        with _lock:
            store = _open.get(key)
            if store is None:
                store = _create(url, create)
                _open[key] = store
    return store


def _create(url: str, create: bool = True) -> Store:
    if url.startswith("memory://"):
        from .kv import MemoryStore

        return MemoryStore(url)
    if url.startswith("diskcache://"):
        from .kv import DiskCacheStore

        directory = url[len("diskcache://") :]
        if not create and not (Path(directory) / "cache.db").is_file():
            raise no_cache_error(directory)
        return DiskCacheStore(directory, url=url)
    if url.startswith(REDIS_SCHEMES):
        from .redis import RedisStore

        # An empty Redis database is an empty cache; there is no file to avoid creating.
        return RedisStore(url)
    from .sql import SqlStore

    return SqlStore(url, create=create)


def close_all() -> None:
    """Close every shared store of this process (tests, and forked workers before reuse)."""
    with _lock:
        stores = list(_open.values())
        _open.clear()
    for store in stores:
        store.close()


def _flush_at_exit() -> None:
    """Commit the buffered hit counters of this process's shared stores as the interpreter exits.

    Without this, the calls and hits of a program's last second (often its only second:
    a short warm run) were silently dropped. Only stores opened by this process are
    flushed: a forked child inherits its parent's buffers and must not commit them twice.
    """
    pid = os.getpid()
    for (_url, owner), store in list(_open.items()):
        if owner == pid:
            # The cache may be gone at exit; never fail the program over stats.
            with contextlib.suppress(Exception):
                store.flush()


atexit.register(_flush_at_exit)


def __getattr__(name: str) -> object:
    # Backends import their drivers lazily: `import cachedembed.stores` stays light.
    if name in ("DiskCacheStore", "MemoryStore"):
        from . import kv

        return getattr(kv, name)
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "SqlStore":
        from .sql import SqlStore

        return SqlStore
    raise AttributeError(name)
