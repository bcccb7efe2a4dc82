"""Key-value stores: ``diskcache`` on disk and a plain dict in memory.

Both keep an entry under its integer item id (which already mixes in the namespace
seed), with the namespace id, check and metadata packed in front of the raw vector
bytes in one ``bytes`` value: diskcache stores ints and bytes natively (no pickling),
so a hit is one indexed SQLite read plus a struct unpack.

Management operations (export, prune, models) scan the keys: these stores are meant
for single machines; the SQL store indexes by namespace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeGuard, TypeVar

from ..errors import StoreError
from ..keys import NamespaceSpec
from ..usage import UsageDelta
from .base import (
    EntryBatch,
    ExportedEntry,
    FileIdentity,
    Namespace,
    NamespaceUsage,
    PendingStats,
    Row,
    Store,
    check_still_there,
    chunked,
    dimension_problem,
    failure,
    remedy_for,
    stored_namespace,
)

_S = TypeVar("_S", bound="_KeyValueStore")
_P = ParamSpec("_P")
_T = TypeVar("_T")

# ns, check, tokens, flags, used day, created, text length; then vector bytes, then text.
_HEADER = struct.Struct("<iqiHiqI")
_NS_PREFIX = "ns:"
_STATS_PREFIX = "stats:"
_NEXT_NS = "meta:next_ns"
_NS_KEYS = "meta:namespaces"  # id -> namespace key, so namespace reads never scan entries
_STATS_KEYS = "meta:stats"  # set of (ns, day) rows, so stats reads never scan entries
_JOBS = "meta:jobs"  # job id -> (ns, state, rev); each job's document under "job:<id>"
_JOB_PREFIX = "job:"
_MODE_RAW = 1  # diskcache.core.MODE_RAW: bytes stored inline in the Cache table


def _pack(
    ns: int,
    check: int,
    tokens: int,
    flags: int,
    used: int,
    created: int,
    vec: bytes,
    text: str | None,
) -> bytes:
    raw_text = text.encode("utf-8", "surrogatepass") if text is not None else b""
    length = len(raw_text) if text is not None else 0xFFFFFFFF
    return _HEADER.pack(ns, check, tokens, flags, used, created, length) + vec + raw_text


def _unpack(key: int, value: bytes) -> tuple[int, ExportedEntry]:
    """The namespace id and the entry packed in ``value`` (marked damaged if it is cut or garbled)."""
    ns, check, tokens, flags, used, created, length = _HEADER.unpack_from(value)
    problem = None
    text: str | None = None
    if length == 0xFFFFFFFF:
        vec = value[_HEADER.size :]
    elif _HEADER.size + length > len(value):
        vec, problem = b"", f"value of {len(value)} bytes is shorter than its {length}-byte text"
    else:
        vec = value[_HEADER.size : len(value) - length]
        try:
            text = value[len(value) - length :].decode("utf-8")
        except UnicodeDecodeError:
            problem = "its stored text is not valid UTF-8"
    entry = ExportedEntry(
        id=key,
        check=check,
        tokens=tokens,
        flags=flags,
        used=used,
        created=created,
        vec=vec,
        text=text,
        problem=problem,
    )
    return ns, entry


def _whole_record(record: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``record`` has the shape of a namespace record (its values are checked later)."""
    return isinstance(record, dict) and {"id", "spec", "dim", "created"} <= record.keys()


def _rows(pairs: Iterable[tuple[int, bytes | None]]) -> list[Row]:
    """Hit-path rows from stored ``(id, packed value)`` pairs; ``None`` values are misses."""
    rows = []
    unpack = _HEADER.unpack_from
    size = _HEADER.size
    for i, value in pairs:
        if value is None or len(value) < size:  # gone, or cut inside its header: a miss
            continue
        ns, check, tokens, flags, used, _created, length = unpack(value)
        end = None if length == 0xFFFFFFFF else len(value) - length
        rows.append((i, ns, check, tokens, flags, used, value[size:end]))
    return rows


def _readable(value: Any) -> TypeGuard[bytes]:
    """Whether ``value`` is there and holds at least a header (a cut value file may not)."""
    return isinstance(value, bytes) and len(value) >= _HEADER.size


def _reported(method: Callable[Concatenate[_S, _P], _T]) -> Callable[Concatenate[_S, _P], _T]:
    """Let ``method`` fail only with :class:`StoreError` (the backend's own errors translated)."""

    @functools.wraps(method)
    def run(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self._reporting():
            return method(self, *args, **kwargs)

    return run


class _KeyValueStore(Store):
    """Shared logic for stores backed by a mutable mapping with an atomic-section primitive."""

    _kv: MutableMapping[Any, Any]

    def _atomic(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        try:
            with self._atomic():  # reentrant: every write inside joins this section
                yield
        except BaseException:
            self._forget_namespaces()
            raise

    def _store_error(self, exc: Exception) -> StoreError | None:
        """``exc`` as a :class:`StoreError`, or ``None`` if it is not a storage failure."""
        return None

    @contextlib.contextmanager
    def _reporting(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            error = self._store_error(exc)
            if error is None:
                raise
            raise error from None

    @_reported
    def _get_or_create_namespace(self, spec: NamespaceSpec) -> Namespace:
        key = _NS_PREFIX + spec.key
        # Read first: a namespace that exists needs no write section (a read-only cache).
        record = self._kv.get(key)
        if record is None:
            record = self._create_namespace(key, spec)
        if not _whole_record(record):
            raise self.damaged_namespace(
                spec.provider, spec.model, "its stored record is not a namespace record"
            )
        return Namespace(
            id=record["id"], key=spec.key, spec=spec, dim=record["dim"], created=record["created"]
        )

    def _create_namespace(self, key: str, spec: NamespaceSpec) -> Any:
        with self._atomic():
            record = self._kv.get(key)  # another writer may have created it since
            if record is None:
                ns_id = int(self._kv.get(_NEXT_NS, 0)) + 1
                self._kv[_NEXT_NS] = ns_id
                record = {
                    "id": ns_id,
                    "spec": spec.canonical,
                    "dim": None,
                    "created": int(time.time()),
                }
                self._kv[key] = record
                self._kv[_NS_KEYS] = {**self._kv.get(_NS_KEYS, {}), ns_id: spec.key}
        return record

    @_reported
    def _read_dimension(self, ns_id: int) -> int | None:
        key = self._kv.get(_NS_KEYS, {}).get(ns_id)
        record = None if key is None else self._kv.get(_NS_PREFIX + key)
        dim = record.get("dim") if isinstance(record, dict) else None
        return dim if dimension_problem(dim) is None else None

    @_reported
    def _set_dimension(self, ns_id: int, dim: int) -> None:
        with self._atomic():
            key = _NS_PREFIX + self._kv[_NS_KEYS][ns_id]
            record = self._kv[key]
            if record["dim"] is None:
                self._kv[key] = {**record, "dim": dim}

    @_reported
    def namespaces(self) -> list[Namespace]:
        out = []
        for ns_id, key in self._kv.get(_NS_KEYS, {}).items():
            record = self._kv.get(_NS_PREFIX + key)
            if not _whole_record(record):  # listed as damaged: verify --fix or prune removes it
                record = {"spec": None, "dim": None, "created": 0}
            out.append(
                stored_namespace(ns_id, key, record["spec"], record["dim"], record["created"])
            )
        return sorted(out, key=lambda n: n.id)

    @_reported
    def set_recorded_dimension(self, ns_id: int, dim: int | None) -> None:
        with self._atomic():
            key = _NS_PREFIX + self._kv[_NS_KEYS][ns_id]
            self._kv[key] = {**self._kv[key], "dim": dim}

    @_reported
    def remove_namespace(self, ns_id: int, *, with_stats: bool) -> int:
        kv = self._kv
        with self._atomic():
            mine = [entry.id for ns, entry in self._entries() if ns == ns_id]
            for i in mine:
                del kv[i]
            keys = dict(kv.get(_NS_KEYS, {}))
            key = keys.pop(ns_id, None)
            kv[_NS_KEYS] = keys
            if key is not None:
                kv.pop(_NS_PREFIX + key, None)
            if with_stats:
                rows = kv.get(_STATS_KEYS, frozenset())
                gone = {(ns, day) for ns, day in rows if ns == ns_id}
                for ns, day in gone:
                    kv.pop(f"{_STATS_PREFIX}{ns}:{day}", None)
                kv[_STATS_KEYS] = rows - gone
        self._forget_namespaces()
        return len(mine)

    @_reported
    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        get = self._kv.get
        return _rows((i, get(i)) for i in ids)

    @_reported
    def _put(self, ns_id: int, batch: EntryBatch, stats: PendingStats) -> None:
        with self._atomic():
            kv = self._kv
            for i, check, tokens, flags, u, c, vec, text in batch.rows():
                # Insert-or-ignore, like the SQL store. A diskcache row whose value file has
                # vanished reads as missing (get -> None) yet still counts as present: it is
                # replaced, or that text would be re-embedded and paid for on every call.
                if i not in kv or not _readable(kv.get(i)):
                    kv[i] = _pack(ns_id, check, tokens, flags, u, c, vec.tobytes(), text)
            self._merge(stats)

    @_reported
    def _flush_stats(self, stats: PendingStats) -> None:
        if stats.is_empty():
            return
        with self._atomic():
            self._merge(stats)

    def _merge(self, stats: PendingStats) -> None:
        kv = self._kv
        for (ns, day), delta in stats.deltas.items():
            key = f"{_STATS_PREFIX}{ns}:{day}"
            current = kv.get(key)
            if current is None:
                kv[_STATS_KEYS] = kv.get(_STATS_KEYS, frozenset()) | {(ns, day)}
            merged = UsageDelta(*current) if current is not None else UsageDelta()
            merged.add(delta)
            kv[key] = merged.as_tuple()
        for (ns, day), ids in stats.touches.items():
            for i in ids:
                value = kv.get(i)
                if not _readable(value):
                    continue
                fields = list(_HEADER.unpack_from(value))
                if fields[0] == ns and fields[4] < day:
                    fields[4] = day
                    kv[i] = _HEADER.pack(*fields) + value[_HEADER.size :]

    @_reported
    def delete(self, ns_id: int, ids: Sequence[int]) -> int:
        removed = 0
        with self._atomic():
            for i in ids:
                value = self._kv.get(i)
                if _readable(value) and _HEADER.unpack_from(value)[0] == ns_id:
                    del self._kv[i]
                    removed += 1
        return removed

    def _reported_entries(self) -> Iterator[tuple[int, ExportedEntry]]:
        """:meth:`_entries`, failing only with :class:`StoreError` (a generator: no decorator)."""
        with self._reporting():
            yield from self._entries()

    def _entries(self) -> Iterator[tuple[int, ExportedEntry]]:
        for key in list(self._kv):
            if isinstance(key, int):
                value = self._kv.get(key)
                # A value cut inside its header names no namespace: it is a miss (and is
                # replaced when its text is embedded again), never part of a listing.
                if _readable(value):
                    yield _unpack(key, value)

    def iter_entries(self, ns_id: int, batch_size: int = 2000) -> Iterator[list[ExportedEntry]]:
        entries = (entry for ns, entry in self._reported_entries() if ns == ns_id)
        return chunked(entries, batch_size)

    @_reported
    def namespace_usage(self) -> dict[int, NamespaceUsage]:
        usage: dict[int, NamespaceUsage] = {}
        for ns, entry in self._entries():
            u = usage.setdefault(ns, NamespaceUsage())
            u.entries += 1
            u.bytes += len(entry.vec)
            u.first_used = entry.used if u.first_used is None else min(u.first_used, entry.used)
            u.last_used = entry.used if u.last_used is None else max(u.last_used, entry.used)
        return usage

    def _insert_job(self, job_id: str, ns: int, state: str, created: int, doc: str) -> None:
        with self._atomic():
            jobs = dict(self._kv.get(_JOBS, {}))
            if job_id in jobs:
                raise StoreError(f"cache {self.url}: job {job_id} is already recorded")
            self._kv[_JOB_PREFIX + job_id] = doc
            self._kv[_JOBS] = {**jobs, job_id: (ns, state, 1)}

    def _replace_job(self, job_id: str, rev: int, state: str, doc: str) -> bool:
        with self._atomic():
            jobs = self._kv.get(_JOBS, {})
            current = jobs.get(job_id)
            if current is None or current[2] != rev:
                return False
            self._kv[_JOB_PREFIX + job_id] = doc
            self._kv[_JOBS] = {**jobs, job_id: (current[0], state, rev + 1)}
            return True

    def _job_rows(self, pending: bool) -> list[tuple[str, int, str, int, str | bytes]]:
        rows = []
        for job_id, (ns, state, rev) in self._kv.get(_JOBS, {}).items():
            if pending and state == "collected":
                continue
            doc = self._kv.get(_JOB_PREFIX + job_id)
            if doc is not None:
                rows.append((job_id, ns, state, rev, doc))
        return rows

    @_reported
    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        out = []
        for ns, day in sorted(self._kv.get(_STATS_KEYS, ())):
            if since_day is None or day >= since_day:
                out.append((ns, day, UsageDelta(*self._kv[f"{_STATS_PREFIX}{ns}:{day}"])))
        return out


class MemoryStore(_KeyValueStore):
    """A process-local store in a dict: for tests, notebooks and short-lived jobs."""

    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url
        self._kv = {}
        self._lock = threading.RLock()

    def _atomic(self) -> AbstractContextManager[Any]:
        return self._lock

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        # A dict has no rollback: keep a shallow copy and put it back on failure. Every
        # value is immutable or replaced whole (never mutated), so the copy is exact.
        with self._lock:
            before = dict(self._kv)
            try:
                yield
            except BaseException:
                self._kv.clear()
                self._kv.update(before)
                self._forget_namespaces()
                raise

    def close(self) -> None:
        pass


def _private_disk() -> type[Any]:
    """diskcache's ``Disk`` with user-only value files and folders.

    Setting the umask while opening only covers what diskcache creates then; value files
    (vectors of 32 KiB and more) and their two levels of folders are created on every
    later write, under the process's umask (usually world-readable). The folders are made
    0700 before the file is written, so nobody else can reach it even before its chmod.
    """
    import diskcache
    from diskcache.core import UNKNOWN

    class PrivateDisk(diskcache.Disk):
        def filename(self, key: Any = UNKNOWN, value: Any = UNKNOWN) -> tuple[str, str]:
            filename, full_path = super().filename(key, value)
            level1 = os.path.dirname(os.path.dirname(full_path))
            for folder in (level1, os.path.dirname(full_path)):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, 0o700)
            return filename, full_path

        def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
            size, mode, filename, db_value = super().store(value, read, key=key)
            if filename is not None:
                os.chmod(os.path.join(self._directory, filename), 0o600)
            return size, mode, filename, db_value

    return PrivateDisk


class DiskCacheStore(_KeyValueStore):
    """A store in a ``diskcache.Cache`` directory: no eviction (prune is explicit), atomic transactions."""

    def __init__(self, directory: str | os.PathLike[str], url: str | None = None) -> None:
        super().__init__()
        path = Path(directory).expanduser()
        self.url = url or f"diskcache://{path}"
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise failure(self.url, f"cannot create the folder {path} ({exc.strerror})") from None
        self._index = path / "cache.db"
        self.read_only = not os.access(path, os.W_OK) or (
            self._index.is_file() and not os.access(self._index, os.W_OK)
        )
        """A folder this process cannot write: hits are served, nothing is stored."""
        if self.read_only:
            self._kv = self._open_read_only(path)
        else:
            self._kv = self._open(path)
        self._opened = FileIdentity.of(self._index)

    def _open(self, path: Path) -> Any:
        import diskcache

        old_umask = os.umask(0o077)  # cache.db and value files: user-only
        try:
            return diskcache.Cache(
                str(path),
                disk=_private_disk(),
                eviction_policy="none",  # never drop a paid-for vector behind the user's back
                size_limit=2**62,
                cull_limit=0,
                statistics=False,
                timeout=60,
            )
        except Exception as exc:
            if remedy_for(str(exc)) is not None:  # full or read-only: the folder is fine
                raise failure(self.url, str(exc)) from None
            raise StoreError(
                f"cannot open diskcache cache {path}: {exc}. Remedy: move the folder aside "
                "and a fresh cache will be created."
            ) from None
        finally:
            os.umask(old_umask)

    def _open_read_only(self, path: Path) -> Any:
        from .diskcache_reader import ReadOnlyDiskcache

        if not self._index.is_file():
            raise StoreError(
                f"cache {self.url}: the folder {path} is read-only for this process and holds "
                "no cache. Remedy: make it writable, or point the cache at a writable folder"
            )
        try:
            return ReadOnlyDiskcache(path, _private_disk())
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open diskcache cache {path} read-only: {exc}. Remedy: make the folder "
                "writable (an older or damaged cache is repaired on a writable open)"
            ) from None

    def _store_error(self, exc: Exception) -> StoreError | None:
        import diskcache

        if not isinstance(exc, (sqlite3.Error, OSError, diskcache.Timeout)):
            return None
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return failure(self.url, text)

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        # Every write goes through here: refuse to write into a folder deleted under us.
        check_still_there(self._index, self._opened, self.url)
        if self.read_only:
            raise failure(self.url, f"{self._index.parent} is read-only for this process")
        with self._kv.transact():  # type: ignore[attr-defined]
            yield

    # Leases: diskcache's add() honours expiry (an expired key counts as absent), so
    # claiming is add-or-check-owner per key, all in one SQLite transaction. Expiry is
    # this host's clock, which every process sharing the folder shares.
    shares_leases = True

    @staticmethod
    def _lease_key(ns_id: int, item_id: int) -> str:
        return f"lease:{ns_id}:{item_id}"

    @_reported
    def claim_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> list[bool]:
        kv: Any = self._kv
        seconds = ttl_ms / 1000
        granted = []
        with self._atomic():
            for i in ids:
                key = self._lease_key(ns_id, i)
                ok = kv.add(key, owner, expire=seconds) or (
                    kv.get(key) == owner and kv.touch(key, expire=seconds)
                )
                granted.append(bool(ok))
        return granted

    @_reported
    def renew_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> None:
        kv: Any = self._kv
        with self._atomic():
            for i in ids:
                key = self._lease_key(ns_id, i)
                if kv.get(key) == owner:
                    kv.touch(key, expire=ttl_ms / 1000)

    @_reported
    def release_leases(self, ns_id: int, ids: Sequence[int], owner: str) -> None:
        kv: Any = self._kv
        with self._atomic():
            for i in ids:
                key = self._lease_key(ns_id, i)
                if kv.get(key) == owner:
                    kv.delete(key)

    # diskcache reads one key per SQL query; a warm batch of thousands of texts would spend
    # most of its time there. Values up to diskcache's file threshold (32 KiB: every vector
    # up to 8,000-d float32) sit inline in its SQLite table, so they are read with one
    # query per 30,000 ids - the same rows, keys and expiry rule `Cache.get` uses (see
    # diskcache.core.Cache.get). Anything else (a value kept in a file) goes through `get`.
    _BATCH = 30000

    @_reported
    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        sql = getattr(self._kv, "_sql", None)
        if len(ids) < 2 or sql is None:
            return super()._get_rows(ns_id, ids)
        inline: list[tuple[int, bytes]] = []
        elsewhere: list[int] = []
        now = time.time()
        for start in range(0, len(ids), self._BATCH):
            chunk = list(ids[start : start + self._BATCH])
            marks = ",".join("?" * len(chunk))
            for key, mode, value in sql(
                f"SELECT key, mode, value FROM Cache WHERE key IN ({marks}) AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (*chunk, now),
            ).fetchall():
                if mode == _MODE_RAW and isinstance(value, bytes):
                    inline.append((key, value))
                else:
                    elsewhere.append(key)
        rows = _rows(inline)
        if elsewhere:
            rows += super()._get_rows(ns_id, elsewhere)
        return rows

    def close(self) -> None:
        with suppress(Exception):
            self.flush()
        self._kv.close()  # type: ignore[attr-defined]
