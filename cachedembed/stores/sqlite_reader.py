"""Usage reports straight from a SQLite cache file, without SQLAlchemy.

``cachedembed stats`` reads two small tables (namespaces and the per-day counters), never
the entries, so on a SQLite file it is dominated by start-up: importing SQLAlchemy alone
costs more than the queries. :func:`open_reader` therefore reads an existing SQLite cache
at the current schema with the standard library's ``sqlite3``; any other URL, a missing
file or an older schema goes through :func:`~cachedembed.stores.open_store` (which creates
or migrates as usual).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ..usage import UsageDelta
from . import _sqltext
from .base import Namespace
from .migrate import HEAD


class SqliteReader:
    """Read-only ``namespaces()`` and ``stats_rows()`` of one SQLite cache file."""

    def __init__(self, conn: sqlite3.Connection, url: str) -> None:
        self._conn = conn
        self.url = url

    def namespaces(self) -> list[Namespace]:
        return _sqltext.to_namespaces(
            self._conn.execute(_sqltext.select_namespaces("key")).fetchall()
        )

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        sql, params = _sqltext.select_stats(since_day)
        return _sqltext.to_stats_rows(self._conn.execute(sql, params).fetchall())

    def flush(self) -> None:
        """Nothing is buffered: the reader never writes."""

    def close(self) -> None:
        self._conn.close()


def open_reader(url: str | None, *, create: bool = True) -> Any:
    """A :class:`SqliteReader` for an existing SQLite cache at :data:`HEAD`, else
    ``open_store(url, create=create)``."""
    from . import default_url, normalize_url, open_store

    resolved = normalize_url(url or default_url())
    reader = _try_sqlite(resolved)
    return reader if reader is not None else open_store(resolved, create=create)


def _try_sqlite(url: str) -> SqliteReader | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = Path(url[len(prefix) :])
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except (sqlite3.Error, TypeError):
        return None  # not (yet) a cache at a known schema: the full store explains or migrates
    if revision != HEAD:
        conn.close()
        return None
    return SqliteReader(conn, url)
