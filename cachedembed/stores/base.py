"""The one storage interface every backend implements, and the records it speaks in.

The wrapper (:class:`cachedembed.Cached`) only ever talks to a :class:`Store`; it never
knows whether entries live in SQLite, PostgreSQL, diskcache or memory. Backends implement
a handful of bulk primitives; everything built on top of them (namespace registry,
stats reports, export, prune) lives in shared code.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ..errors import CachedEmbedError, ConfigurationError, StoreError
from ..flight import SingleFlight
from ..keys import NamespaceSpec
from ..usage import UsageDelta, today
from .outage import Breaker, Outage, StoreUnavailable

if TYPE_CHECKING:  # numpy loads on first use: `cachedembed stats` never needs it
    import numpy as np

log = logging.getLogger("cachedembed")

FLAG_TOKENS_ESTIMATED = 1
"""Entry flag: the entry's token count is an estimate, not provider-reported."""

UNREGISTERED_NS = 0
"""Id of a namespace the store could not create (a read-only or full cache): never stored
under, never counted. Every store numbers real namespaces from 1."""


@dataclass
class Namespace:
    """A namespace as stored: integer id, key, spec and the vector dimension (once known)."""

    id: int
    key: str
    spec: NamespaceSpec
    dim: int | None = None
    created: int = 0
    spec_damage: str | None = None
    """Why the stored spec is not a valid spec (only removal helps: no model can reach it)."""
    dim_damage: str | None = None
    """Why the recorded dimension is not a valid one (``verify --fix`` resets it)."""

    @property
    def damage(self) -> str | None:
        """What is wrong with the stored record, or ``None`` when it is valid."""
        return "; ".join(p for p in (self.spec_damage, self.dim_damage) if p) or None

    @property
    def label(self) -> str:
        """``provider/model``, as reports and management commands show it."""
        return f"{self.spec.provider}/{self.spec.model}"

    def matches(self, model: str | None) -> bool:
        """Whether ``model`` (a case-insensitive substring of :attr:`label`) selects this namespace."""
        return not model or model.lower() in self.label.lower()


CONNECT_TIMEOUT = 5
"""Seconds to wait for a database server to accept a connection."""

MAX_DIM = 65536
"""Largest vector dimension a namespace may record (and an import may declare)."""
ROLES = ("document", "query")
HASHES = ("xxh3", "blake2b")
DTYPES = ("float32", "float16")
KINDS = ("text", "image")


def spec_problem(data: object) -> str | None:
    """Why ``data`` (a decoded namespace spec) is not a spec this cachedembed can use, or ``None``."""
    from ..keys import KEY_SCHEMA

    if not isinstance(data, dict):
        return "namespace 'spec' is not an object"
    if data.get("v", KEY_SCHEMA) != KEY_SCHEMA:
        return f"namespace key schema {data.get('v')!r}, this cachedembed uses {KEY_SCHEMA}"
    if not isinstance(data.get("identity"), dict):
        return "namespace identity is not an object"
    checks = (
        ("role", None, ROLES),
        ("dtype", "float32", DTYPES),
        ("hash", "xxh3", HASHES),
        ("kind", "text", KINDS),
    )
    for name, default, allowed in checks:
        value = data.get(name, default)
        if value not in allowed:
            return f"namespace {name} {value!r}, expected one of {', '.join(allowed)}"
    return None


def dimension_problem(dim: object) -> str | None:
    """Why ``dim`` is not a dimension a namespace may record (``None``: not recorded yet)."""
    if dim is None or (type(dim) is int and 1 <= dim <= MAX_DIM):
        return None
    return f"recorded dimension {dim!r} is not an integer from 1 to {MAX_DIM}"


def stored_namespace(
    ns_id: int, key: str, spec_text: object, dim: object, created: object
) -> Namespace:
    """A namespace as read back from storage; an invalid record is marked damaged, never raised.

    A record damaged on disk, or written by another (older, foreign) writer, must still be
    listed, verified and repaired or removed: otherwise the model stays broken for good.
    """
    try:
        data = json.loads(spec_text)  # type: ignore[arg-type]
        problem = spec_problem(data)
    except (TypeError, ValueError, RecursionError):
        data, problem = None, "its spec is not valid JSON"
    spec = NamespaceSpec.from_dict(data) if problem is None else _placeholder_spec(data, key)
    return Namespace(
        id=int(ns_id),
        key=key,
        spec=spec,
        dim=dim if dimension_problem(dim) is None else None,  # type: ignore[arg-type]
        created=created if type(created) is int else 0,
        spec_damage=problem,
        dim_damage=dimension_problem(dim),
    )


def _placeholder_spec(data: object, key: str) -> NamespaceSpec:
    """What can be shown of an invalid spec: its identity when that is an object, else its key."""
    fields = data if isinstance(data, dict) else {}
    identity = fields.get("identity")
    if not isinstance(identity, dict):
        identity = {"provider": "damaged", "model": key}
    return NamespaceSpec(
        identity=identity,
        role=str(fields.get("role", "?")),  # type: ignore[arg-type]  # shown, never used
        dtype=str(fields.get("dtype", "?")),
        hash=str(fields.get("hash", "?")),  # type: ignore[arg-type]
    )


Row = tuple[int, int, int, int, int, int, bytes]
"""One stored entry as the hit path reads it: ``(id, ns, check, tokens, flags, used, vec)``.

A plain tuple, as database drivers return it: the hit path unpacks rows by position
(``zip(*rows)``), so no backend builds a per-row object for it."""


@dataclass
class EntryBatch:
    """Entries to write for one namespace: parallel columns, vectors already in storage dtype."""

    ids: Sequence[int]
    checks: Sequence[int]
    vectors: np.ndarray
    tokens: Sequence[int]
    flags: Sequence[int]
    texts: Sequence[str | None] | None = None
    used: Sequence[int] | None = None
    created: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> Iterator[tuple[int, int, int, int, int, int, np.ndarray, str | None]]:
        """``(id, check, tokens, flags, used, created, vector, text)`` per entry; missing
        columns get what entries written now get: last used today, created now, no text."""
        n, now = len(self.ids), int(time.time())
        return zip(
            self.ids,
            self.checks,
            self.tokens,
            self.flags,
            self.used if self.used is not None else repeat(now // 86400, n),
            self.created if self.created is not None else repeat(now, n),
            self.vectors,
            self.texts if self.texts is not None else repeat(None, n),
        )


@dataclass
class ExportedEntry:
    """An entry with everything needed to move it between stores bit-exactly."""

    id: int
    check: int
    tokens: int
    flags: int
    used: int
    created: int
    vec: bytes
    text: str | None
    problem: str | None = None
    """Why the stored entry is damaged (it could not be read back whole), or ``None``."""


T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), as backends page their listings."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def text_problem(text: object) -> str | None:
    """Why a text read back from storage is not a valid text, or ``None`` if it is."""
    if text is None:
        return None
    if not isinstance(text, str):
        return f"its stored text is {type(text).__name__}, not text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "its stored text is not valid UTF-8"
    return None


@dataclass
class NamespaceUsage:
    """Storage footprint of a namespace, computed from its entries."""

    entries: int = 0
    bytes: int = 0
    first_used: int | None = None
    last_used: int | None = None


JOB_COLLECTED = "collected"
"""The state of a job whose results are in the cache (or that had none to give): finished."""


@dataclass
class BatchJob:
    """A provider batch job as the cache records it (see :mod:`cachedembed.batchjobs`).

    ``requests`` maps each request's ``custom_id`` to the ``[item id, check]`` pairs of
    its inputs, in input order: what the results are written under. Texts are kept only
    when the wrapper stores texts (``texts``, parallel to each request's items).
    """

    id: str
    """Our job id (also sent as the batch's metadata, so a killed submitter can be resumed)."""
    provider: str
    ns: int
    state: str
    """``submitting``, the provider's last status (``validating`` ... ``cancelled``), or ``collected``."""
    created: int
    requests: dict[str, list[list[int]]] = field(default_factory=dict)
    texts: dict[str, list[str]] | None = None
    config: dict[str, object] = field(default_factory=dict)
    """The embedding function's secret-free config: enough to reach the provider again."""
    batch_id: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    finished: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """The provider's request counts (total, completed, failed)."""
    collected: dict[str, Any] = field(default_factory=dict)
    """What collecting stored: ``items``, ``tokens``, ``failed_requests``."""
    errors: list[str] = field(default_factory=list)
    """Why requests failed, one line each (at most a few dozen kept)."""
    rev: int = 0
    """Bumped by every update; an update naming an older revision is refused."""

    @property
    def pending(self) -> bool:
        return self.state != JOB_COLLECTED

    @property
    def item_count(self) -> int:
        return sum(len(items) for items in self.requests.values())

    def to_doc(self) -> str:
        import json

        data = {k: v for k, v in self.__dict__.items() if k not in ("id", "ns", "state", "rev")}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_doc(cls, job_id: str, ns: int, state: str, rev: int, doc: str | bytes) -> BatchJob:
        import json

        data = json.loads(doc)
        return cls(id=job_id, ns=int(ns), state=state, rev=int(rev), **data)


@dataclass
class PendingStats:
    """Counters and last-use touches buffered in memory between flushes."""

    deltas: dict[tuple[int, int], UsageDelta] = field(default_factory=dict)
    touches: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.deltas and not self.touches


MAX_IDENTITY_BYTES = 60_000
"""Largest namespace identity (canonical JSON, UTF-8) any store accepts.

The smallest column that holds it is MySQL's TEXT (65,535 bytes); one limit for every
backend, so a model that works on SQLite also works on PostgreSQL and MariaDB.
"""


def _check_identity_size(spec: NamespaceSpec) -> None:
    size = len(spec.canonical.encode("utf-8", "surrogatepass"))
    if size > MAX_IDENTITY_BYTES:
        raise ConfigurationError(
            f"the cache identity of {spec.provider}/{spec.model[:80]} is {size:,} bytes, over the "
            f"{MAX_IDENTITY_BYTES:,}-byte limit: pass a shorter namespace=... (or a get_config() "
            "without large values, e.g. a hash of a long prompt instead of the prompt)"
        )


def failure(where: str, text: str) -> StoreError:
    """A :class:`StoreError` for an operation on ``where`` that failed with ``text``, with its remedy."""
    remedy = remedy_for(text) or "check that the cache's disk or database server is healthy"
    # Drivers end some messages with a full stop ("Connection refused."): one stop, not two.
    return StoreError(f"cache {where}: {text.rstrip('. ')}. Remedy: {remedy}")


def remedy_for(text: str) -> str | None:
    """The remedy for a full or read-only cache, recognised from the error text; else ``None``."""
    lowered = text.lower()
    if "full" in lowered or "no space" in lowered or "quota" in lowered:
        return "free disk space (or move the cache to a bigger disk); entries are written again on the next calls"
    if "readonly" in lowered or "read-only" in lowered or "permission denied" in lowered:
        return (
            "make the cache writable by this user (hits are still served from a read-only "
            "cache; misses are returned but not stored)"
        )
    return None


class FileIdentity(NamedTuple):
    """Device and inode of a cache file, to notice it being deleted or replaced while open."""

    dev: int
    ino: int

    @classmethod
    def of(cls, path: os.PathLike[str] | str) -> FileIdentity | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_dev, st.st_ino)


def check_still_there(path: os.PathLike[str] | str, opened: FileIdentity | None, url: str) -> None:
    """Refuse to write through a handle whose file was deleted or replaced under this process.

    SQLite (and diskcache on top of it) keeps writing into a deleted file without an error:
    every entry would vanish with the process.
    """
    if opened is not None and FileIdentity.of(path) != opened:
        raise StoreError(
            f"cache {url}: {path} was deleted or replaced while this process had it open, "
            "so nothing more is written to it. Remedy: restart the process (a fresh cache is "
            "created) or restore the file"
        )


_live_stores: weakref.WeakSet[Store] = weakref.WeakSet()


class _Flusher:
    """One daemon thread per process that commits buffered hit counters of idle stores.

    Without it, a process that goes quiet after a burst of hits would publish them only on
    its next call or at exit, and `cachedembed stats` elsewhere would show them late. It
    starts with the first buffered counter, wakes every ``flush_interval``, dies with the
    process (daemon; the exit flush in :mod:`cachedembed.stores` commits the rest) and is
    started afresh in a forked child, whose parent's thread did not survive the fork.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="cachedembed-flush", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(Store.flush_interval / 2)
            for store in _snapshot(_live_stores):
                store.flush_if_due()

    def reset_after_fork(self) -> None:
        self._thread = None
        self._lock = threading.Lock()


def _snapshot(stores: weakref.WeakSet[Store]) -> list[Store]:
    while True:
        try:
            return list(stores)
        except RuntimeError:  # the set changed while being copied: copy again
            continue


_flusher = _Flusher()


def _after_fork_in_child() -> None:
    _flusher.reset_after_fork()
    for store in list(_live_stores):
        store._reset_process_state()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Store(ABC):
    """A persistent (or in-memory) map from (namespace, item id) to a vector, plus usage stats.

    Guarantees every backend gives:

    * ``write`` is atomic: either all entries of the batch *and* the stats delta that
      paid for them are durable, or none is. Stats are therefore never ahead of data.
    * ``write`` never fails on an entry that another writer stored first (insert-or-ignore).
    * ``lookup`` returns only rows it read back whole; rows may come in any order.
    * Stats deltas are merged by atomic increments, so concurrent writers lose none.
    * Every failure a client sees is a :class:`StoreError`.

    Clients call the public methods (``namespace``, ``lookup``, ``write``,
    ``write_entries``, ``record``, ``flush``, ``merge_stats``, ``delete``, ...); backends
    implement the protected hooks (``_get_rows``, ``_put``, ``_flush_stats``,
    ``_get_or_create_namespace``, ...), which only this class calls.
    """

    url: str
    """The store's URL with any password masked: safe to print."""

    flush_interval: float = 1.0
    """Seconds between flushes of buffered hit counters and last-use touches."""

    outage_waits: tuple[float, float] = (0.0, 0.0)
    """Seconds a failing store is skipped after a failure, first and at most (doubling in
    between). Zero for local files, which fail fast: they are simply retried on every call.
    Database servers use 1 s to 30 s, so an outage costs no connection attempt per call."""

    def __init__(self) -> None:
        self._ns_by_key: dict[str, Namespace] = {}
        self._reset_process_state()
        _live_stores.add(self)

    def _reset_process_state(self) -> None:
        """Locks, in-flight claims and buffered counters: state that belongs to one process.

        Also run in a forked child: it must not commit the counters its parent buffered
        (the parent commits them), wait on the parent's in-flight claims (nobody would
        resolve them), or inherit a lock some parent thread held at the fork.
        """
        self._ns_lock = threading.Lock()
        self.flights = SingleFlight()
        self._pending = PendingStats()
        self._pending_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.store_errors = 0
        """Operations of this process on this store that failed or were skipped while it was
        failing (entries or counters not saved, lookups served by the provider instead)."""
        self.outage = Outage(*self.outage_waits)
        self._unsaved_lock = threading.Lock()

    # -- failures the caller survives -------------------------------------------
    # An operation that fails must not cost the caller its vectors (Cached(on_store_error=
    # "warn")): the failure is counted, logged once per outage with its remedy, and the
    # store is skipped for a while (stores.outage); paid-for batches that could not be
    # written wait in a bounded buffer and are written when the store answers again.

    def report_failure(self, exc: BaseException, consequence: str) -> None:
        """Count a failure the caller carries on without; log the first of an outage."""
        with self._pending_lock:
            self.store_errors += 1
        if self.outage.start_report():
            prefix = f"cache {self.url}: "
            detail = str(exc).removeprefix(prefix)  # a StoreError already names the cache
            log.warning(
                "%s%s (%s); retried on later calls. Further store errors are counted in "
                "stats()['store_errors'], not logged, until the cache answers again",
                prefix,
                consequence,
                detail,
            )

    @contextmanager
    def guarded(self, breaker: Breaker) -> Iterator[None]:
        """Run a read or write of ``breaker``'s kind: skipped (:class:`StoreUnavailable`)
        while it is failing, its failures opening the breaker, a success closing it."""
        if not breaker.allow():
            raise breaker.unavailable(self.url)
        try:
            yield
        except Exception as exc:
            error = self._failure_of(breaker, exc)
            if error is exc:
                raise
            raise error from None
        self._answered(breaker)

    def probe(self) -> None:
        """While failing, try one cheap read if a probe is due (a health check's recovery test)."""
        if self.outage.reads.failing or self.outage.writes.failing:
            with suppress(StoreError), self.guarded(self.outage.reads):
                self.namespaces()
            if self.outage.writes.failing and not self.outage.reads.failing:
                with suppress(StoreError):
                    self.flush()

    def keep_unsaved(self, ns_id: int, batch: EntryBatch) -> None:
        """Keep a paid-for batch whose write failed, to write it when the store answers again."""
        self.outage.keep(ns_id, batch)
        _flusher.ensure_running()

    def lookup(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        """Rows for those of ``ids`` that are stored (any order, no duplicates), through the
        read breaker (one attribute test while healthy)."""
        reads = self.outage.reads
        if reads.failing:
            with self.guarded(reads):
                return self._get_rows(ns_id, ids)
        try:
            return self._get_rows(ns_id, ids)
        except Exception as exc:
            error = self._failure_of(reads, exc)
            if error is exc:
                raise
            raise error from None

    def _failure_of(self, breaker: Breaker, exc: Exception) -> Exception:
        """What a failed operation of ``breaker``'s kind raises, the breaker told of it.

        A storage failure opens the breaker, a driver's error becoming the
        :class:`StoreError` clients see. A skip (:class:`StoreUnavailable`) and a deliberate
        refusal (bad input or configuration) pass unchanged and leave the breaker alone.
        """
        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, CachedEmbedError) and not isinstance(exc, StoreError):
            return exc
        error = exc if isinstance(exc, StoreError) else self._as_store_error(exc)
        breaker.failed(error)
        return error

    def _as_store_error(self, exc: Exception) -> StoreError:
        """A driver error a backend hook let escape, as the :class:`StoreError` clients see
        (translated once, here, with its remedy and without credentials)."""
        return failure(self.url, self._scrub(f"{type(exc).__name__}: {exc}"))

    def _scrub(self, text: str) -> str:
        """``text`` without credentials (backends whose errors may quote one override this)."""
        return text

    def _answered(self, breaker: Breaker) -> None:
        """After a successful operation: close its breaker, log a recovery, write what waits."""
        breaker.succeeded()
        outage = self.outage
        if outage.reported and not outage.failing and outage.end_report():
            log.warning("cache %s: %s succeed again; caching resumed", self.url, breaker.name)
        if breaker is outage.writes and outage.has_unsaved:
            try:
                self._write_unsaved()
            except StoreError as exc:
                outage.writes.failed(exc)
                self.report_failure(exc, "entries kept from the outage not written yet")

    def _write_unsaved(self) -> None:
        """Write the batches kept during an outage, oldest first (one thread at a time).

        A batch that fails goes back to the front of the buffer and the error is raised.
        """
        if not self._unsaved_lock.acquire(blocking=False):
            return  # another thread is writing them
        try:
            while (item := self.outage.take()) is not None:
                try:
                    # Their counters went back to the buffered ones when the write failed.
                    self._put(item.ns_id, item.batch, PendingStats())
                except BaseException:
                    self.outage.put_back(item)
                    raise
        finally:
            self._unsaved_lock.release()

    # -- buffered accounting --------------------------------------------------
    # A hit must not cost a write transaction: hit counters and last-use touches are
    # buffered here and merged at most every `flush_interval` seconds, with the next
    # miss write, on stats(), on close and at exit. Miss counters always commit in the
    # same transaction as the entries they paid for.

    def record(self, ns_id: int, delta: UsageDelta, touches: Sequence[int] = ()) -> None:
        """Buffer ``delta`` (and last-use ``touches``) for namespace ``ns_id``, flushing when due."""
        if ns_id == UNREGISTERED_NS:
            return
        key = (ns_id, today())
        with self._pending_lock:
            self._add_pending(key, delta, touches)
        _flusher.ensure_running()
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush when counters are buffered and ``flush_interval`` has passed; never raise.

        The caller's vectors were served: a failed counter flush must not fail its call.
        flush() puts the counters back, so the next flush retries them.
        """
        # The clock first, without the lock: nearly every call (each cached query) is not
        # due, and needs no lock to know it. A stale read only delays a flush to the next call.
        if time.monotonic() - self._last_flush < self.flush_interval:
            return
        with self._pending_lock:
            due = not self._pending.is_empty() or self.outage.has_unsaved
        if not due:
            return
        try:
            self.flush()
        except StoreUnavailable:
            pass  # skipped, not failed: the counters stay buffered for the next probe
        except Exception as exc:
            self.report_failure(exc, "could not save usage counters yet")

    def write(self, ns_id: int, batch: EntryBatch, delta: UsageDelta) -> None:
        """Store ``batch`` and commit ``delta`` (plus everything buffered) atomically with it."""
        with self._pending_lock:
            self._add_pending((ns_id, today()), delta, ())
            pending = self._take_pending()
        try:
            with self.guarded(self.outage.writes):
                self._put(ns_id, batch, pending)
        except BaseException:
            self._restore(pending)
            raise

    def flush(self) -> None:
        """Commit buffered counters and touches now."""
        with self._pending_lock:
            pending = self._take_pending()
        if pending.is_empty():
            if self.outage.has_unsaved:  # only batches kept from an outage: they are the probe
                with self.guarded(self.outage.writes):
                    self._write_unsaved()
            return
        try:
            with self.guarded(self.outage.writes):
                self._flush_stats(pending)
        except BaseException:
            self._restore(pending)
            raise

    def write_entries(self, ns_id: int, batch: EntryBatch) -> None:
        """Store ``batch`` with no counters (an import: its stats come as rows of their own).

        Buffered counters stay buffered: inside a :meth:`bulk` that rolls back they would
        be lost with the import.
        """
        with self.guarded(self.outage.writes):
            self._put(ns_id, batch, PendingStats())

    def merge_stats(self, stats: PendingStats) -> None:
        """Merge ``stats`` (counters of any day, e.g. imported ones) in one transaction."""
        with self.guarded(self.outage.writes):
            self._flush_stats(stats)

    def pending_rows(self) -> list[tuple[int, int, UsageDelta]]:
        """Buffered counters not committed yet, as ``stats_rows`` rows (for stats during an outage)."""
        with self._pending_lock:
            return [(ns, day, delta) for (ns, day), delta in self._pending.deltas.items()]

    def _add_pending(self, key: tuple[int, int], delta: UsageDelta, touches: Sequence[int]) -> None:
        if not delta.is_empty():
            current = self._pending.deltas.get(key)
            if current is None:
                self._pending.deltas[key] = current = UsageDelta()
            current.add(delta)
        if touches:
            self._pending.touches.setdefault(key, []).extend(touches)

    def _take_pending(self) -> PendingStats:
        pending, self._pending = self._pending, PendingStats()
        self._last_flush = time.monotonic()
        return pending

    def _restore(self, pending: PendingStats) -> None:
        with self._pending_lock:
            for key, delta in pending.deltas.items():
                self._add_pending(key, delta, ())
            for key, ids in pending.touches.items():
                # Deduplicated: while writes keep failing, touches must not pile up per hit.
                self._add_pending(key, UsageDelta(), ids)
                self._pending.touches[key] = list(set(self._pending.touches[key]))

    # -- namespaces ---------------------------------------------------------

    def namespace(self, spec: NamespaceSpec) -> Namespace:
        """Return the namespace for ``spec``, creating it on first use (memoised per process)."""
        key = spec.key
        ns = self._ns_by_key.get(key)
        if ns is None:
            _check_identity_size(spec)
            with self._ns_lock:
                ns = self._ns_by_key.get(key)
                if ns is None:
                    with self.guarded(self.outage.writes):
                        ns = self._get_or_create_namespace(spec)
                    problem = dimension_problem(ns.dim)
                    if problem is not None:
                        raise self.damaged_namespace(spec.provider, spec.model, problem)
                    self._ns_by_key[key] = ns
        return ns

    def damaged_namespace(self, provider: str, model: str, problem: str) -> StoreError:
        """The error for a model whose stored namespace record is invalid, with its repair."""
        from .._printable import printable

        label = printable(f"{provider}/{model}"[:120])
        return StoreError(
            f"cache {self.url}: the namespace of {label} is damaged ({printable(problem)}). "
            f"Remedy: run `cachedembed verify --fix --model {label}`"
        )

    @abstractmethod
    def set_recorded_dimension(self, ns_id: int, dim: int | None) -> None:
        """Overwrite the recorded dimension of ``ns_id`` (``None``: the next write records it)."""

    @abstractmethod
    def remove_namespace(self, ns_id: int, *, with_stats: bool) -> int:
        """Delete the namespace ``ns_id``: its entries, its record and, ``with_stats``, its
        stats, in one transaction (Redis: crash-safe instead, see its store); return how
        many entries were removed."""

    def set_dimension(self, ns: Namespace, dim: int) -> None:
        """Record the vector dimension of ``ns`` the first time vectors are stored.

        The first writer wins: ``ns.dim`` is read back afterwards, so when another process
        fixed a different dimension first, the caller sees it (and refuses its vectors).
        """
        if ns.dim is None:
            with self.guarded(self.outage.writes):
                self._set_dimension(ns.id, dim)
                ns.dim = self._read_dimension(ns.id)

    def known_dimension(self, ns: Namespace) -> int | None:
        """The dimension of ``ns``, re-read from storage if this process has not seen one yet."""
        if ns.dim is None:
            with self.guarded(self.outage.reads):
                ns.dim = self._read_dimension(ns.id)
        return ns.dim

    @abstractmethod
    def _read_dimension(self, ns_id: int) -> int | None: ...

    @abstractmethod
    def _get_or_create_namespace(self, spec: NamespaceSpec) -> Namespace: ...

    @abstractmethod
    def _set_dimension(self, ns_id: int, dim: int) -> None: ...

    @abstractmethod
    def namespaces(self) -> list[Namespace]:
        """All namespaces in the store, read fresh from storage."""

    # -- entries ------------------------------------------------------------

    @abstractmethod
    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        """Hook behind :meth:`lookup`: rows for those of ``ids`` that are stored (any order,
        no duplicates), only rows read back whole."""

    @abstractmethod
    def _put(self, ns_id: int, batch: EntryBatch, stats: PendingStats) -> None:
        """Hook behind :meth:`write`: atomically insert ``batch`` (ignoring ids already
        present) and merge ``stats``."""

    @abstractmethod
    def delete(self, ns_id: int, ids: Sequence[int]) -> int:
        """Delete entries of ``ns_id`` by id; return how many were removed."""

    @abstractmethod
    def _flush_stats(self, stats: PendingStats) -> None:
        """Hook behind :meth:`flush`: merge counters and last-use touches in one transaction."""

    @abstractmethod
    def iter_entries(self, ns_id: int, batch_size: int = 2000) -> Iterator[list[ExportedEntry]]:
        """Every entry of ``ns_id``, in batches (for export, verify and prune)."""

    @abstractmethod
    def namespace_usage(self) -> dict[int, NamespaceUsage]:
        """Entries, bytes and first/last use per namespace id."""

    @abstractmethod
    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        """Aggregated ``(namespace id, day, counters)`` rows, never a scan of entries."""

    # -- batch jobs ---------------------------------------------------------
    # Each backend keeps a job as (id, ns, state, rev, created, JSON document) and
    # implements three primitives; the job logic lives in cachedembed.batchjobs.

    def record_job(self, job: BatchJob) -> None:
        """Record a new job (its id must be new)."""
        job.rev = 1
        self._insert_job(job.id, job.ns, job.state, job.created, job.to_doc())

    def update_job(self, job: BatchJob) -> bool:
        """Save ``job`` if nobody updated it since it was read; ``False`` (nothing saved) otherwise.

        On success ``job.rev`` is the new revision. Inside :meth:`bulk`, the update commits or
        rolls back with the entries written there.
        """
        saved = self._replace_job(job.id, job.rev, job.state, job.to_doc())
        if saved:
            job.rev += 1
        return saved

    def jobs(self, *, pending: bool = False, ns_id: int | None = None) -> list[BatchJob]:
        """Recorded jobs, oldest first; only unfinished ones with ``pending``."""
        out = [
            BatchJob.from_doc(*row)
            for row in self._job_rows(pending)
            if ns_id is None or int(row[1]) == ns_id
        ]
        return sorted(out, key=lambda j: (j.created, j.id))

    def job(self, job_id: str) -> BatchJob | None:
        """The job recorded under ``job_id`` (our id or the provider's batch id)."""
        for job in self.jobs():
            if job_id in (job.id, job.batch_id):
                return job
        return None

    def _insert_job(self, job_id: str, ns: int, state: str, created: int, doc: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not record batch jobs")

    def _replace_job(self, job_id: str, rev: int, state: str, doc: str) -> bool:
        """Compare-and-set: write ``state``/``doc`` and bump ``rev`` only where it equals ``rev``."""
        raise NotImplementedError(f"{type(self).__name__} does not record batch jobs")

    def _job_rows(self, pending: bool) -> list[tuple[str, int, str, int, str | bytes]]:
        """``(id, ns, state, rev, doc)`` of every job (only not-collected ones with ``pending``)."""
        return []

    # -- leases -------------------------------------------------------------
    # Cross-process single-flight (see cachedembed.fleet): a store other processes can
    # reach records who is embedding which item, one statement per batch. A store only
    # this process sees grants every lease (its in-process SingleFlight is enough).

    shares_leases = False
    """Whether other processes can reach this store, so that leases are worth taking."""

    def claim_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> list[bool]:
        """Lease ``ids`` to ``owner`` for ``ttl_ms``; which of them it now holds (parallel to ``ids``).

        A lease is granted when nobody holds it, when its holder's lease expired (taken
        over), or when ``owner`` holds it already (extended).
        """
        return [True] * len(ids)

    def renew_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> None:  # noqa: B027
        """Extend ``owner``'s leases among ``ids`` to ``ttl_ms`` from now (others' are left alone)."""

    def release_leases(self, ns_id: int, ids: Sequence[int], owner: str) -> None:  # noqa: B027
        """Drop ``owner``'s leases among ``ids`` (never another owner's)."""

    def delete_namespace_entries(self, ns_id: int, ids: Iterable[int]) -> int:
        """Delete in chunks; shared by prune and verify."""
        removed = 0
        chunk: list[int] = []
        for i in ids:
            chunk.append(i)
            if len(chunk) >= 5000:
                removed += self.delete(ns_id, chunk)
                chunk = []
        if chunk:
            removed += self.delete(ns_id, chunk)
        return removed

    @abstractmethod
    def bulk(self) -> AbstractContextManager[None]:
        """One transaction around every write this thread makes inside: all of them, or none.

        For imports: a failure (or Ctrl-C) anywhere inside leaves the store exactly as it
        was. Other writers wait for it to finish (SQLite, diskcache) or never see a part
        of it (PostgreSQL, MySQL). Namespaces created inside are forgotten on failure.
        """

    def _forget_namespaces(self) -> None:
        """Drop the per-process namespace memo (after a rolled-back :meth:`bulk`)."""
        with self._ns_lock:
            self._ns_by_key.clear()

    def schema_revision(self) -> str | None:
        """The Alembic revision of the store's schema, for stores that have one."""
        return None

    def upgrade(self) -> None:  # noqa: B027 - optional hook; schemaless stores have nothing to do
        """Bring the store's schema to the newest revision (no-op where there is no schema)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and file handles."""
