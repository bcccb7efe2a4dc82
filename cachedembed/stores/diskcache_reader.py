"""A diskcache folder this process cannot write, read without ``diskcache.Cache``.

``diskcache.Cache`` writes while it opens (its settings table, pragmas), so a read-only
folder (a cache baked into an image, a read-only mount) cannot be opened with it. This
mapping reads the same ``cache.db`` with SQLite's ``mode=ro`` and decodes keys and values
with diskcache's own ``Disk``, exactly as ``Cache.get`` does; every write fails with
SQLite's read-only error, which the store reports with its remedy.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_MISSING = object()


class ReadOnlyDiskcache:
    """The read side of a ``diskcache.Cache`` (``get``, ``[]``, ``in``, iteration, ``_sql``)."""

    def __init__(self, directory: Path, disk: type[Any]) -> None:
        index = directory / "cache.db"
        # immutable (no locking, no -shm file to create): nobody can be writing a folder
        # that is read-only, unless a -wal file says a writer had it before it became so.
        immutable = not os.access(directory, os.W_OK) and not Path(f"{index}-wal").exists()
        uri = f"{index.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
        self._con = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
        settings = dict(self._con.execute("SELECT key, value FROM Settings").fetchall())
        options = {k[5:]: v for k, v in settings.items() if k.startswith("disk_")}
        self._disk = disk(str(directory), **options)

    @property
    def _sql(self) -> Any:
        return self._con.execute

    def get(self, key: Any, default: Any = None) -> Any:
        db_key, raw = self._disk.put(key)
        rows = self._con.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
            " AND (expire_time IS NULL OR expire_time > ?)",
            (db_key, raw, time.time()),
        ).fetchall()
        if not rows:
            return default
        ((mode, filename, value),) = rows
        try:
            return self._disk.fetch(mode, filename, value, False)
        except OSError:  # its value file is gone: a miss, as for Cache.get
            return default

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[Any]:
        rows = self._con.execute("SELECT key, raw FROM Cache ORDER BY rowid").fetchall()
        return (self._disk.get(key, raw) for key, raw in rows)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._refuse()

    def __delitem__(self, key: Any) -> None:
        self._refuse()

    def pop(self, key: Any, default: Any = None) -> Any:
        self._refuse()

    def _refuse(self) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    def close(self) -> None:
        self._con.close()
