"""The Redis (and Valkey) store: a cache several processes and hosts share in one Redis.

Keys, under the URL's ``prefix`` (default ``cachedembed``)::

    P:e:<ns>:<id>       an entry: the key-value stores' packed value (header, raw
                        little-endian vector, optional text), read with one MGET per batch
    P:namespaces        hash: namespace key -> namespace id
    P:ns:<ns>           hash: key, spec, dim, created of one namespace
    P:ns_ids            set of namespace ids
    P:next_ns           the last namespace id handed out
    P:stats             set of "<ns>:<day>" members, so stats reads never scan entries
    P:stats:<ns>:<day>  hash of counters, merged with HINCRBY / HINCRBYFLOAT
    P:removing          set of ids of removed namespaces whose entries are still being deleted
    P:jobs              hash: batch job id -> "<ns>:<state>:<rev>"
    P:job:<id>          a batch job's JSON document (updated by compare-and-set on rev)
    P:l:<ns>:<id>       a lease: the owner embedding that item, expiring by itself (PX)

Namespace ids increase in creation order, and restart above the old ones after Redis
lost everything (see ``_NAMESPACE_SCRIPT``); every write re-registers its namespace in the
same transaction, so a restart or an evicted record heals itself on the next miss.

A write is one ``MULTI``/``EXEC`` transaction (entries with ``SET NX``, counters, last-use
touches): all of it or none. Redis keeps no history of an entry once it is gone, so an
evicted or expired entry is simply a miss; it can never turn into a wrong vector, since
the id and check of every value are verified on read as for every store.
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, StoreError
from ..keys import NamespaceSpec
from ..redact import REDACTED
from ..usage import UsageDelta
from .base import (
    CONNECT_TIMEOUT,
    EntryBatch,
    ExportedEntry,
    Namespace,
    NamespaceUsage,
    PendingStats,
    Row,
    Store,
    chunked,
    dimension_problem,
    failure,
    stored_namespace,
)
from .kv import _HEADER, _pack, _rows, _unpack
from .leases import CLAIM_SCRIPT, REDIS_CHUNK, RELEASE_SCRIPT, RENEW_SCRIPT
from .outage import SERVER_WAITS
from .urls import redact_url


def _number(raw: bytes | None) -> int | bytes | None:
    """A stored integer field as an int, or as its raw bytes when it is not one (then damaged)."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return raw


SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_TTL_RE = re.compile(r"(\d+)\s*(ms|s|m|h|d|w)?")
_TTL_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_USED_OFFSET = struct.calcsize("<iqiH")  # the header's `used` day: after ns, check, tokens, flags
_STATS_INT_FIELDS = tuple(c for c in UsageDelta.columns() if c != "provider_seconds")
_MGET_CHUNK = 10_000
_SCAN_COUNT = 1000

# Get or create a namespace id atomically. KEYS = P:namespaces (key -> id), P:next_ns,
# P:ns_ids (the set of ids); ARGV = namespace key, record key prefix "P:ns:", spec, created.
# Ids count up from the server's clock (seconds since 2023-11-14) when the counter is
# missing: after a restart that emptied Redis, new ids stay above the ones processes still
# hold, so a namespace that outlived the restart never shares its id with a new one.
_NAMESPACE_SCRIPT = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return tonumber(id) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], tonumber(redis.call('TIME')[1]) - 1700000000)
end
id = redis.call('INCR', KEYS[2])
while redis.call('EXISTS', ARGV[2] .. id) == 1 do id = redis.call('INCR', KEYS[2]) end
redis.call('HSET', ARGV[2] .. id, 'key', ARGV[1], 'spec', ARGV[3], 'created', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('SADD', KEYS[3], id)
return id
"""

# Last use: raise the `used` day in the header of each existing entry (never create a key:
# SETRANGE on a missing key would), and restart its TTL when one is configured.
# KEYS = entry keys; ARGV = day, TTL in ms (0: none), byte offset of `used`.
_TOUCH_SCRIPT = """
local day = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local at = tonumber(ARGV[3])
for _, k in ipairs(KEYS) do
  local raw = redis.call('GETRANGE', k, at, at + 3)
  if #raw == 4 and struct.unpack('<i4', raw) < day then
    redis.call('SETRANGE', k, at, struct.pack('<i4', day))
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  end
end
return 0
"""
_TOUCH_CHUNK = 5000

# A job update: only where the stored revision is the one the caller read. Returns what
# it replaced ({index value, document}) so a failed bulk() can put exactly that back, or
# false when the revision differs (nothing changed, nothing to undo).
# KEYS = P:jobs, P:job:<id>; ARGV = job id, expected rev, new state, new document.
_JOB_CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return false end
local ns, rev = string.match(current, '^(%d+):[^:]*:(%d+)$')
if tonumber(rev) ~= tonumber(ARGV[2]) then return false end
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ns .. ':' .. ARGV[3] .. ':' .. (tonumber(rev) + 1))
return {current, old}
"""


@dataclass
class _Undo:
    """What a :meth:`RedisStore.bulk` wrote, so a failure can take exactly that back.

    Redis has no rollback across round trips; an import is undone by compensation: entries
    it added (``SET NX`` that took) are deleted, counters it added are subtracted, and
    namespaces and dimensions it recorded are removed. Other clients may see the import
    while it runs; after a failure the store holds what it held before.
    """

    entries: list[str] = field(default_factory=list)
    counters: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    namespaces: list[tuple[str, int]] = field(default_factory=list)
    dimensions: list[int] = field(default_factory=list)
    jobs: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    """(job id, index value, document) of each job before the bulk first changed it."""


def parse_ttl(text: str) -> int:
    """A TTL such as ``30d``, ``12h``, ``90m``, ``3600`` (seconds) or ``500ms``, in milliseconds."""
    match = _TTL_RE.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ConfigurationError(
            f"ttl={text!r} is not a duration: use a positive number with a unit, e.g. ttl=30d, "
            "ttl=12h, ttl=90m, ttl=3600s"
        )
    return int(match.group(1)) * _TTL_UNITS_MS[match.group(2) or "s"]


class RedisStore(Store):
    """A cache in Redis or Valkey reached through a ``redis://`` / ``rediss://`` URL.

    URL options (removed before the URL reaches the client): ``prefix`` (key prefix,
    default ``cachedembed``) and ``ttl`` (entries expire that long after their last use
    day, e.g. ``30d``; default: never). Every other query option goes to redis-py.
    """

    outage_waits = SERVER_WAITS

    def __init__(self, url: str) -> None:
        super().__init__()
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except Exception:
            raise ConfigurationError(
                "not a Redis URL: use redis://[:password@]host[:port][/db][?prefix=NAME&ttl=30d]"
            ) from None

        self._password = parsed.password
        self.url = redact_url(url)
        query = dict(parsed.query)
        prefix = str(query.pop("prefix", "cachedembed"))
        if not _PREFIX_RE.fullmatch(prefix):
            raise ConfigurationError(
                f"cache {self.url}: prefix {prefix!r} must be 1-100 letters, digits or . _ : -"
            )
        ttl = query.pop("ttl", None)
        self.ttl_ms = parse_ttl(str(ttl)) if ttl is not None else 0
        self.prefix = prefix
        self._p = prefix + ":"
        scheme = parsed.drivername.replace("valkey", "redis")
        client_url = (
            parsed.difference_update_query(["prefix", "ttl"])
            .set(drivername=scheme)
            .render_as_string(hide_password=False)
        )
        self._client = self._connect(client_url)
        self._ns_by_id: dict[int, Namespace] = {}
        self._bulk = threading.local()
        self._namespace_script = self._client.register_script(_NAMESPACE_SCRIPT)
        self._lease_scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("claim", CLAIM_SCRIPT),
                ("renew", RENEW_SCRIPT),
                ("release", RELEASE_SCRIPT),
            )
        }

    # -- connection ---------------------------------------------------------

    def _connect(self, client_url: str) -> Any:
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "a redis:// cache needs the redis client: pip install 'cachedembed[redis]'"
            ) from None
        # No command retries: a pipeline resent after a lost reply could count its stats
        # twice. A connection the server closed is replaced when it is next checked out
        # (redis-py sees the socket readable), and an unreachable server is skipped for
        # a while (outage_waits) instead of being dialled on every call.
        options: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": 60,
        }
        try:
            client = redis.Redis.from_url(client_url, **options)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"cache {self.url}: {self._clean(exc)}") from None
        with self._guard():
            info = client.info("cluster")
        if info.get("cluster_enabled") in (1, "1"):
            client.close()
            raise ConfigurationError(
                f"cache {self.url} is a Redis Cluster node, and Redis Cluster is not supported "
                "(entries, counters and namespaces must live on one server). Remedy: use a "
                "standalone Redis or Valkey (with replicas or Sentinel for availability)."
            )
        return client

    def _clean(self, exc: BaseException) -> str:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text.replace(self._password, REDACTED) if self._password else text

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn the client's errors into one clear ``StoreError`` (never with the password)."""
        import redis

        try:
            yield
        except redis.exceptions.RedisError as exc:
            text = self._clean(exc)
            if isinstance(
                exc, redis.exceptions.ClusterError | redis.exceptions.AskError
            ) or text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT")):
                raise StoreError(
                    f"cache {self.url} answered as a Redis Cluster ({text}); Redis Cluster is "
                    "not supported: use a standalone Redis or Valkey"
                ) from None
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
                raise StoreError(
                    f"cache {self.url} is full ({text}). Remedy: raise maxmemory, set "
                    "maxmemory-policy to allkeys-lru (or volatile-lru with ?ttl=...), or run "
                    "`cachedembed prune`; nothing of this write was stored"
                ) from None
            raise failure(self.url, text) from None

    # -- keys ---------------------------------------------------------------

    def _entry_key(self, ns_id: int, item_id: int) -> str:
        return f"{self._p}e:{ns_id}:{item_id}"

    def _entry_keys(self, ns_id: int, ids: Sequence[int]) -> list[str]:
        head = f"{self._p}e:{ns_id}:"
        return [head + str(i) for i in ids]

    def _ns_record(self, ns_id: int) -> str:
        return f"{self._p}ns:{ns_id}"

    def _stats_key(self, ns_id: int, day: int) -> str:
        return f"{self._p}stats:{ns_id}:{day}"

    def _scan(self, pattern: str) -> Iterator[list[bytes]]:
        """Keys matching ``pattern``, a page at a time (SCAN: never blocks the server)."""
        cursor = 0
        while True:
            with self._guard():
                cursor, keys = self._client.scan(cursor, match=pattern, count=_SCAN_COUNT)
            if keys:
                yield keys
            if cursor == 0:
                return

    # -- namespaces ---------------------------------------------------------

    def _get_or_create_namespace(self, spec: NamespaceSpec) -> Namespace:
        undo = self._undo()
        with self._guard():
            existed = undo is None or self._client.hexists(self._p + "namespaces", spec.key)
            ns_id = int(
                self._namespace_script(
                    keys=[self._p + "namespaces", self._p + "next_ns", self._p + "ns_ids"],
                    args=[
                        spec.key,
                        self._p + "ns:",
                        spec.canonical,
                        int(time.time()),
                    ],
                )
            )
            dim, created = self._client.hmget(self._ns_record(ns_id), "dim", "created")
        if not existed and undo is not None:
            undo.namespaces.append((spec.key, ns_id))
        ns = Namespace(
            id=ns_id,
            key=spec.key,
            spec=spec,
            dim=_number(dim),  # type: ignore[arg-type]  # checked by Store.namespace
            created=int(created or 0),
        )
        self._ns_by_id[ns_id] = ns
        return ns

    def _read_dimension(self, ns_id: int) -> int | None:
        with self._guard():
            dim = self._client.hget(self._ns_record(ns_id), "dim")
        value = _number(dim)
        return value if isinstance(value, int) and dimension_problem(value) is None else None

    def _set_dimension(self, ns_id: int, dim: int) -> None:
        with self._guard():
            recorded = self._client.hsetnx(self._ns_record(ns_id), "dim", dim)
        undo = self._undo()
        if recorded and undo is not None:
            undo.dimensions.append(ns_id)

    def namespaces(self) -> list[Namespace]:
        with self._guard():
            ids = [int(v) for v in self._client.smembers(self._p + "ns_ids")]
            pipe = self._client.pipeline(transaction=False)
            for ns_id in ids:
                pipe.hgetall(self._ns_record(ns_id))
            records = pipe.execute()
        out = []
        for ns_id, record in zip(ids, records):
            if b"spec" not in record:
                continue  # half-evicted: the next write of that namespace registers it again
            out.append(
                stored_namespace(
                    ns_id,
                    record.get(b"key", b"").decode("utf-8", "replace"),
                    record[b"spec"],
                    _number(record.get(b"dim")),
                    _number(record.get(b"created", b"0")),
                )
            )
        return sorted(out, key=lambda n: n.id)

    def set_recorded_dimension(self, ns_id: int, dim: int | None) -> None:
        with self._guard():
            if dim is None:
                self._client.hdel(self._ns_record(ns_id), "dim")
            else:
                self._client.hset(self._ns_record(ns_id), "dim", dim)
        self._ns_by_id.pop(ns_id, None)  # its memo must not register the old dimension again

    def remove_namespace(self, ns_id: int, *, with_stats: bool) -> int:
        # Crash-safe rather than one transaction (entries are found by SCAN): one MULTI/EXEC
        # unregisters the namespace (and its stats) and marks its id in P:removing, then the
        # entries go in SCAN pages. A crash in between leaves no half-present namespace: it
        # is gone from `models`, new writers get a new id (ids are never handed out twice),
        # and its leftover entries are skipped by `namespace_usage` until the next removal
        # finishes them. A writer of this model running meanwhile registers its namespace
        # again, which is what it would do after eviction; the deletions are then misses.
        with self._guard():
            key = self._client.hget(self._ns_record(ns_id), "key")
            members = self._client.smembers(self._p + "stats") if with_stats else set()
            pipe = self._client.pipeline(transaction=True)
            pipe.sadd(self._p + "removing", ns_id)
            if key is not None:
                pipe.hdel(self._p + "namespaces", key)
            pipe.srem(self._p + "ns_ids", ns_id)
            pipe.delete(self._ns_record(ns_id))
            mine = [m for m in members if m.split(b":")[0] == str(ns_id).encode()]
            for member in mine:
                pipe.delete(self._stats_key(ns_id, int(member.split(b":")[1])))
            if mine:
                pipe.srem(self._p + "stats", *mine)
            pipe.execute()
        self._ns_by_id.pop(ns_id, None)
        self._forget_namespaces()
        return self._finish_removals().get(ns_id, 0)

    def _removing(self) -> set[int]:
        """Ids of namespaces already unregistered whose entries are not all deleted yet."""
        with self._guard():
            return {int(v) for v in self._client.smembers(self._p + "removing")}

    def _finish_removals(self) -> dict[int, int]:
        """Delete the entries of every namespace marked removed (this one's and any an
        interrupted removal left); return how many entries of each went."""
        removed: dict[int, int] = {}
        for ns_id in sorted(self._removing()):
            removed[ns_id] = self._delete_entries_of(ns_id)
            with self._guard():
                self._client.srem(self._p + "removing", ns_id)
        return removed

    def _delete_entries_of(self, ns_id: int) -> int:
        removed = 0
        for keys in self._scan(f"{self._p}e:{ns_id}:*"):
            with self._guard():
                removed += int(self._client.delete(*keys))
        return removed

    def _register(self, pipe: Any, ns_id: int) -> None:
        """Queue the namespace's registration again (a no-op unless Redis lost it)."""
        ns = self._ns_by_id.get(ns_id)
        if ns is None:
            return
        record = self._ns_record(ns_id)
        pipe.hsetnx(self._p + "namespaces", ns.key, ns_id)
        pipe.sadd(self._p + "ns_ids", ns_id)
        pipe.hsetnx(record, "key", ns.key)
        pipe.hsetnx(record, "spec", ns.spec.canonical)
        pipe.hsetnx(record, "created", ns.created or int(time.time()))
        if ns.dim is not None:
            pipe.hsetnx(record, "dim", ns.dim)

    # -- entries ------------------------------------------------------------

    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        if not ids:
            return []
        keys = self._entry_keys(ns_id, ids)
        with self._guard():
            if len(keys) <= _MGET_CHUNK:
                values = self._client.mget(keys) if len(keys) > 1 else [self._client.get(keys[0])]
            else:  # several MGETs, still one round trip
                pipe = self._client.pipeline(transaction=False)
                for start in range(0, len(keys), _MGET_CHUNK):
                    pipe.mget(keys[start : start + _MGET_CHUNK])
                values = [v for chunk in pipe.execute() for v in chunk]
        try:
            return _rows(zip(ids, values))
        except struct.error:
            # A value too short for a header (written under our prefix by something else):
            # a miss, never an error or a vector.
            return _rows((i, v) for i, v in zip(ids, values) if v is None or len(v) >= _HEADER.size)

    def _put(self, ns_id: int, batch: EntryBatch, stats: PendingStats) -> None:
        n = len(batch)
        px = self.ttl_ms or None
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            self._register(pipe, ns_id)
            first_set = len(pipe)
            keys = self._entry_keys(ns_id, batch.ids)
            for key, (_, check, tokens, flags, u, c, vec, text) in zip(keys, batch.rows()):
                # Insert-or-ignore, like the SQL store's ON CONFLICT DO NOTHING.
                pipe.set(
                    key,
                    _pack(ns_id, check, tokens, flags, u, c, vec.tobytes(), text),
                    nx=True,
                    px=px,
                )
            self._merge(pipe, stats)
            results = pipe.execute()
        undo = self._undo()
        if undo is not None:
            taken = results[first_set : first_set + n]
            undo.entries.extend(key for key, ok in zip(keys, taken) if ok)

    def _flush_stats(self, stats: PendingStats) -> None:
        if stats.is_empty():
            return
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            self._merge(pipe, stats)
            pipe.execute()

    def _merge(self, pipe: Any, stats: PendingStats) -> None:
        undo = self._undo()
        for (ns_id, day), delta in stats.deltas.items():
            key = self._stats_key(ns_id, day)
            for name in _STATS_INT_FIELDS:
                value = getattr(delta, name)
                if value:
                    pipe.hincrby(key, name, value)
                    if undo is not None:
                        undo.counters[key][name] += value
            if delta.provider_seconds:
                pipe.hincrbyfloat(key, "provider_seconds", delta.provider_seconds)
                if undo is not None:
                    undo.counters[key]["provider_seconds"] += delta.provider_seconds
            pipe.sadd(self._p + "stats", f"{ns_id}:{day}")
        for (ns_id, day), touched in stats.touches.items():
            keys = self._entry_keys(ns_id, sorted(set(touched)))
            for start in range(0, len(keys), _TOUCH_CHUNK):
                chunk = keys[start : start + _TOUCH_CHUNK]
                pipe.eval(_TOUCH_SCRIPT, len(chunk), *chunk, day, self.ttl_ms, _USED_OFFSET)

    def delete(self, ns_id: int, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        with self._guard():
            return int(self._client.delete(*self._entry_keys(ns_id, ids)))

    def iter_entries(self, ns_id: int, batch_size: int = 2000) -> Iterator[list[ExportedEntry]]:
        return chunked(self._entries_of(ns_id), batch_size)

    def _entries_of(self, ns_id: int) -> Iterator[ExportedEntry]:
        head = f"{self._p}e:{ns_id}:"
        for keys in self._scan(head + "*"):
            with self._guard():
                values = self._client.mget(keys)
            for key, value in zip(keys, values):
                if value is None or len(value) < _HEADER.size:
                    continue  # expired or evicted since the scan saw it, or not an entry
                yield _unpack(int(key[len(head) :]), value)[1]

    def namespace_usage(self) -> dict[int, NamespaceUsage]:
        # Headers and lengths only (GETRANGE + STRLEN): `models` never downloads vectors.
        usage: dict[int, NamespaceUsage] = {}
        removing = self._removing()  # their leftovers are no namespace's entries any more
        for keys in self._scan(f"{self._p}e:*"):
            with self._guard():
                pipe = self._client.pipeline(transaction=False)
                for key in keys:
                    pipe.getrange(key, 0, _HEADER.size - 1)
                    pipe.strlen(key)
                replies = pipe.execute()
            for header, length in zip(replies[::2], replies[1::2]):
                if len(header) < _HEADER.size:
                    continue
                ns, _check, _tokens, _flags, used, _created, text_len = _HEADER.unpack(header)
                if ns in removing:
                    continue
                text_bytes = 0 if text_len == 0xFFFFFFFF else text_len
                u = usage.setdefault(ns, NamespaceUsage())
                u.entries += 1
                u.bytes += length - _HEADER.size - text_bytes
                u.first_used = used if u.first_used is None else min(u.first_used, used)
                u.last_used = used if u.last_used is None else max(u.last_used, used)
        return usage

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        with self._guard():
            members = self._client.smembers(self._p + "stats")
        rows = sorted(tuple(int(x) for x in m.split(b":")) for m in members)
        rows = [(ns, day) for ns, day in rows if since_day is None or day >= since_day]
        with self._guard():
            pipe = self._client.pipeline(transaction=False)
            for ns, day in rows:
                pipe.hgetall(self._stats_key(ns, day))
            hashes = pipe.execute()
        out = []
        for (ns, day), fields in zip(rows, hashes):
            delta = UsageDelta(
                **{name: int(fields.get(name.encode(), 0)) for name in _STATS_INT_FIELDS}
            )
            delta.provider_seconds = float(fields.get(b"provider_seconds", 0.0))
            out.append((ns, day, delta))
        return out

    # -- leases ---------------------------------------------------------------

    shares_leases = True

    def _lease_call(self, name: str, ns_id: int, ids: Sequence[int], *args: Any) -> list[Any]:
        """Run lease script ``name`` over ``ids``, a chunk per call, in one round trip."""
        if not ids:
            return []
        script = self._lease_scripts[name]
        head = f"{self._p}l:{ns_id}:"
        keys = [head + str(i) for i in ids]
        with self._guard():
            pipe = self._client.pipeline(transaction=False)
            for start in range(0, len(keys), REDIS_CHUNK):
                script(keys=keys[start : start + REDIS_CHUNK], args=list(args), client=pipe)
            return list(pipe.execute())

    def claim_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> list[bool]:
        chunks = self._lease_call("claim", ns_id, ids, owner, int(ttl_ms))
        return [bool(flag) for chunk in chunks for flag in chunk]

    def renew_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> None:
        self._lease_call("renew", ns_id, ids, owner, int(ttl_ms))

    def release_leases(self, ns_id: int, ids: Sequence[int], owner: str) -> None:
        self._lease_call("release", ns_id, ids, owner)

    # -- batch jobs -----------------------------------------------------------

    def _job_key(self, job_id: str) -> str:
        return f"{self._p}job:{job_id}"

    def _remember_job(self, job_id: str, index: bytes | None, doc: bytes | None) -> None:
        """Inside :meth:`bulk`: what a job write replaced, so a failure can put it back.

        Only writes that took are remembered, with the values they replaced: undoing a
        refused update would overwrite another client's successful one.
        """
        undo = self._undo()
        if undo is not None and all(j != job_id for j, _i, _d in undo.jobs):
            undo.jobs.append((job_id, index, doc))

    def _insert_job(self, job_id: str, ns: int, state: str, created: int, doc: str) -> None:
        with self._guard():
            if not self._client.hsetnx(self._p + "jobs", job_id, f"{ns}:{state}:1"):
                raise StoreError(f"cache {self.url}: job {job_id} is already recorded")
            self._client.set(self._job_key(job_id), doc)
        self._remember_job(job_id, None, None)

    def _replace_job(self, job_id: str, rev: int, state: str, doc: str) -> bool:
        with self._guard():
            replaced = self._client.eval(
                _JOB_CAS_SCRIPT, 2, self._p + "jobs", self._job_key(job_id), job_id, rev, state, doc
            )
        if not replaced:
            return False
        self._remember_job(job_id, replaced[0], replaced[1])
        return True

    def _job_rows(self, pending: bool) -> list[tuple[str, int, str, int, str | bytes]]:
        with self._guard():
            index = self._client.hgetall(self._p + "jobs")
            ids = [k.decode() for k in index]
            docs = self._client.mget([self._job_key(i) for i in ids]) if ids else []
        rows = []
        for job_id, doc in zip(ids, docs):
            ns, state, rev = index[job_id.encode()].decode().split(":")
            if doc is not None and not (pending and state == "collected"):
                rows.append((job_id, int(ns), state, int(rev), doc))
        return rows

    # -- all-or-nothing imports --------------------------------------------------

    @contextmanager
    def bulk(self) -> Iterator[None]:
        if self._undo() is not None:  # reentrant: an inner bulk joins the outer one
            yield
            return
        self._bulk.undo = undo = _Undo()
        try:
            yield
        except BaseException:
            self._bulk.undo = None
            self._rollback(undo)
            self._forget_namespaces()
            raise
        finally:
            self._bulk.undo = None

    def _undo(self) -> _Undo | None:
        return getattr(self._bulk, "undo", None)

    def _rollback(self, undo: _Undo) -> None:
        """Take back what a failed :meth:`bulk` wrote (see :class:`_Undo`), in one transaction."""
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            for start in range(0, len(undo.entries), _MGET_CHUNK):
                pipe.delete(*undo.entries[start : start + _MGET_CHUNK])
            for key, fields in undo.counters.items():
                for name, value in fields.items():
                    if name == "provider_seconds":
                        pipe.hincrbyfloat(key, name, -value)
                    else:
                        pipe.hincrby(key, name, -int(value))
            for ns_id in undo.dimensions:
                pipe.hdel(self._ns_record(ns_id), "dim")
            for job_id, index, doc in undo.jobs:
                if index is None:
                    pipe.hdel(self._p + "jobs", job_id)
                else:
                    pipe.hset(self._p + "jobs", job_id, index)
                if doc is None:
                    pipe.delete(self._job_key(job_id))
                else:
                    pipe.set(self._job_key(job_id), doc)
            for ns_key, ns_id in undo.namespaces:
                pipe.hdel(self._p + "namespaces", ns_key)
                pipe.srem(self._p + "ns_ids", ns_id)
                pipe.delete(self._ns_record(ns_id))
            pipe.execute()
            self._drop_emptied_counters(list(undo.counters))

    def _drop_emptied_counters(self, keys: list[str]) -> None:
        """Remove counter hashes a rollback brought back to all zeros (they did not exist)."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hvals(key)
        for key, values in zip(keys, pipe.execute()):
            if all(float(v) == 0 for v in values):
                self._client.delete(key)
                self._client.srem(self._p + "stats", key[len(self._p + "stats:") :])

    def close(self) -> None:
        with suppress(Exception):
            self.flush()
        self._client.close()
