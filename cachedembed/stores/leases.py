"""Leases in shared stores: the SQL statements and Redis scripts that claim, renew and release them.

A lease says "owner X is embedding item I of namespace N until time T". It is what keeps
two processes (or hosts) sharing a cache from paying the provider twice for one text:
see :mod:`cachedembed.fleet` for how the wrapper uses them.

Every operation takes a whole batch of ids in one statement (or one script call), and
expiry is measured on the server's clock (the database's, Redis's), so clients on
different hosts never compare their own clocks. A lease whose expiry has passed is free:
the next claim takes it over atomically.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

# -- SQL --------------------------------------------------------------------------

_NOW_MS = {
    # julianday('now') is fixed for the duration of one statement, with millisecond precision.
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    "mysql": "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
}


class LeaseSql:
    """The lease statements for one SQL dialect, run on a cursor inside a write transaction.

    Ids go in sorted, so concurrent claimers lock rows in one order (no lock cycles on
    PostgreSQL and InnoDB). PostgreSQL takes each id list as one array parameter; SQLite
    and MySQL take IN lists and VALUES rows, chunked below their parameter limits.
    """

    def __init__(self, dialect: str, max_params: int) -> None:
        self.postgres = dialect == "postgresql"
        self.mysql = dialect in ("mysql", "mariadb")
        self.now = _NOW_MS["mysql" if self.mysql else dialect]
        self.step = max_params - 8
        self.p = "?" if dialect == "sqlite" else "%s"

    def _chunks(self, ids: Sequence[int], per_id: int = 1) -> Iterator[list[int]]:
        ordered = sorted(ids)
        step = self.step // per_id
        for start in range(0, len(ordered), step):
            yield ordered[start : start + step]

    def _where_ids(self, chunk: list[int]) -> tuple[str, list[Any]]:
        if self.postgres:
            return "id = ANY(%s::bigint[])", [chunk]
        return f"id IN ({', '.join([self.p] * len(chunk))})", list(chunk)

    def claim(self, cur: Any, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> set[int]:
        """Take the free (never leased, released or expired) leases of ``ids``; the ids now ``owner``'s.

        Leases ``owner`` already holds count as taken (and are extended).
        """
        p, now = self.p, self.now
        ttl = int(ttl_ms)
        mine: set[int] = set()
        for chunk in self._chunks(ids, per_id=2):
            where, params = self._where_ids(chunk)
            cur.execute(
                f"UPDATE leases SET owner = {p}, expires = {now} + {ttl} "
                f"WHERE ns = {p} AND {where} AND (expires < {now} OR owner = {p})",
                [owner, ns_id, *params, owner],
            )
            cur.execute(*self._insert(ns_id, chunk, owner, ttl))
            cur.execute(
                f"SELECT id FROM leases WHERE ns = {p} AND owner = {p} AND {where}",
                [ns_id, owner, *params],
            )
            mine.update(int(row[0]) for row in cur.fetchall())
        return mine

    def _insert(self, ns_id: int, chunk: list[int], owner: str, ttl: int) -> tuple[str, list[Any]]:
        """One INSERT of a lease row per id, ignoring ids leased already."""
        p, now, ns = self.p, self.now, int(ns_id)
        if self.postgres:
            return (
                "INSERT INTO leases (ns, id, owner, expires) "
                f"SELECT {ns}, x, %s, {now} + {ttl} FROM unnest(%s::bigint[]) AS x "
                "ON CONFLICT (ns, id) DO NOTHING",
                [owner, chunk],
            )
        rows = ", ".join([f"({ns}, {p}, {p}, {now} + {ttl})"] * len(chunk))
        params = [v for i in chunk for v in (i, owner)]
        if self.mysql:
            return f"INSERT IGNORE INTO leases (ns, id, owner, expires) VALUES {rows}", params
        return (
            f"INSERT INTO leases (ns, id, owner, expires) VALUES {rows} ON CONFLICT (ns, id) DO NOTHING",
            params,
        )

    def renew(self, cur: Any, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> None:
        """Push the expiry of ``owner``'s leases among ``ids`` to ``ttl_ms`` from now."""
        p = self.p
        for chunk in self._chunks(ids):
            where, params = self._where_ids(chunk)
            cur.execute(
                f"UPDATE leases SET expires = {self.now} + {int(ttl_ms)} "
                f"WHERE ns = {p} AND owner = {p} AND {where}",
                [ns_id, owner, *params],
            )

    def release(self, cur: Any, ns_id: int, ids: Sequence[int], owner: str) -> None:
        """Delete ``owner``'s leases among ``ids`` (never another owner's)."""
        p = self.p
        for chunk in self._chunks(ids):
            where, params = self._where_ids(chunk)
            cur.execute(
                f"DELETE FROM leases WHERE ns = {p} AND owner = {p} AND {where}",
                [ns_id, owner, *params],
            )


# -- Redis ------------------------------------------------------------------------
# KEYS = lease keys P:l:<ns>:<id>; ARGV = owner, TTL in ms. Redis expires a lease by itself
# (its own clock), so a free lease is simply a missing key and SET NX takes it over.

CLAIM_SCRIPT = """
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  elseif redis.call('GET', k) == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

RENEW_SCRIPT = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 0
"""

RELEASE_SCRIPT = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 0
"""

REDIS_CHUNK = 5000
"""Keys per script call: a script blocks the server while it runs, so a huge batch is split
(all chunks still go in one pipelined round trip)."""
