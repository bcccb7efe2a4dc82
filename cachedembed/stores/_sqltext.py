"""The report queries shared by the SQLAlchemy store and the light SQLite reader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..usage import UsageDelta
from .base import Namespace, stored_namespace

STATS_COLUMNS = UsageDelta.columns()
_PROVIDER_SECONDS = STATS_COLUMNS.index("provider_seconds")


def select_namespaces(key_column: str) -> str:
    return f"SELECT id, {key_column}, spec, dim, created FROM namespaces ORDER BY id"


def to_namespaces(rows: Sequence[Sequence[Any]]) -> list[Namespace]:
    """Namespaces from their rows; an invalid record is listed as damaged, not raised."""
    return [stored_namespace(i, k, s, d, c) for i, k, s, d, c in rows]


def select_stats(since_day: int | None) -> tuple[str, tuple[int, ...]]:
    """The stats query (``?`` placeholders) and its parameters."""
    sql = f"SELECT ns, day, {', '.join(STATS_COLUMNS)} FROM stats"
    if since_day is None:
        return sql, ()
    return sql + " WHERE day >= ?", (since_day,)


def to_stats_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[int, int, UsageDelta]]:
    out = []
    for ns, day, *values in rows:
        delta = UsageDelta(*[int(v) for v in values])
        delta.provider_seconds = float(values[_PROVIDER_SECONDS])
        out.append((int(ns), int(day), delta))
    return out
