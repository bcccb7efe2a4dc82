"""The one storage interface every backend implements, and the records it speaks in.

The wrapper (:class:`cachedembed.Cached`) only ever talks to a :class:`Store`; it never
knows whether entries live in SQLite, PostgreSQL, diskcache or memory. Backends implement
a handful of bulk primitives; everything built on top of them (namespace registry,
stats reports, export, prune) lives in shared code.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..flight import SingleFlight
from ..keys import NamespaceSpec
from ..usage import UsageDelta, today

if TYPE_CHECKING:  # numpy loads on first use: `cachedembed stats` never needs it
    import numpy as np

log = logging.getLogger("cachedembed")

FLAG_TOKENS_ESTIMATED = 1
"""Entry flag: the entry's token count is an estimate, not provider-reported."""


@dataclass
class Namespace:
    """A namespace as stored: integer id, key, spec and the vector dimension (once known)."""

    id: int
    key: str
    spec: NamespaceSpec
    dim: int | None = None
    created: int = 0

    @property
    def label(self) -> str:
        """``provider/model``, as reports and management commands show it."""
        return f"{self.spec.provider}/{self.spec.model}"

    def matches(self, model: str | None) -> bool:
        """Whether ``model`` (a case-insensitive substring of :attr:`label`) selects this namespace."""
        return not model or model.lower() in self.label.lower()


class Row(NamedTuple):
    """One stored entry as the hit path reads it."""

    id: int
    ns: int
    check: int
    tokens: int
    flags: int
    used: int
    vec: bytes


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


_live_stores: weakref.WeakSet[Store] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_live_stores):
        store._reset_process_state()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Store(ABC):
    """A persistent (or in-memory) map from (namespace, item id) to a vector, plus usage stats.

    Guarantees every backend gives:

    * ``put`` is atomic: either all entries of the batch *and* the stats delta that
      paid for them are durable, or none is. Stats are therefore never ahead of data.
    * ``put`` never fails on an entry that another writer stored first (insert-or-ignore).
    * ``get`` returns only rows it read back whole; rows may come in any order.
    * Stats deltas are merged by atomic increments, so concurrent writers lose none.
    """

    url: str
    """The store's URL with any password masked: safe to print."""

    flush_interval: float = 1.0
    """Seconds between flushes of buffered hit counters and last-use touches."""

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

    # -- buffered accounting --------------------------------------------------
    # A hit must not cost a write transaction: hit counters and last-use touches are
    # buffered here and merged at most every `flush_interval` seconds, with the next
    # miss write, on stats(), on close and at exit. Miss counters always commit in the
    # same transaction as the entries they paid for.

    def record(self, ns_id: int, delta: UsageDelta, touches: Sequence[int] = ()) -> None:
        """Buffer ``delta`` (and last-use ``touches``) for namespace ``ns_id``, flushing when due."""
        key = (ns_id, today())
        with self._pending_lock:
            self._add_pending(key, delta, touches)
            due = time.monotonic() - self._last_flush >= self.flush_interval
        if due:
            try:
                self.flush()
            except Exception as exc:
                # The caller's vectors were served; a failed counter flush must not fail its
                # call. flush() put the counters back, so the next flush retries them.
                log.warning(
                    "cache %s: could not save usage counters yet (%s); will retry", self.url, exc
                )

    def write(self, ns_id: int, batch: EntryBatch, delta: UsageDelta) -> None:
        """Store ``batch`` and commit ``delta`` (plus everything buffered) atomically with it."""
        with self._pending_lock:
            self._add_pending((ns_id, today()), delta, ())
            pending = self._take_pending()
        try:
            self.put(ns_id, batch, pending)
        except BaseException:
            self._restore(pending)
            raise

    def flush(self) -> None:
        """Commit buffered counters and touches now."""
        with self._pending_lock:
            pending = self._take_pending()
        if pending.is_empty():
            return
        try:
            self.flush_stats(pending)
        except BaseException:
            self._restore(pending)
            raise

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
                self._add_pending(key, UsageDelta(), ids)

    # -- namespaces ---------------------------------------------------------

    def namespace(self, spec: NamespaceSpec) -> Namespace:
        """Return the namespace for ``spec``, creating it on first use (memoised per process)."""
        key = spec.key
        ns = self._ns_by_key.get(key)
        if ns is None:
            with self._ns_lock:
                ns = self._ns_by_key.get(key)
                if ns is None:
                    ns = self._get_or_create_namespace(spec)
                    self._ns_by_key[key] = ns
        return ns

    def set_dimension(self, ns: Namespace, dim: int) -> None:
        """Record the vector dimension of ``ns`` the first time vectors are stored.

        The first writer wins: ``ns.dim`` is read back afterwards, so when another process
        fixed a different dimension first, the caller sees it (and refuses its vectors).
        """
        if ns.dim is None:
            self._set_dimension(ns.id, dim)
            ns.dim = self._read_dimension(ns.id)

    def known_dimension(self, ns: Namespace) -> int | None:
        """The dimension of ``ns``, re-read from storage if this process has not seen one yet."""
        if ns.dim is None:
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
    def get(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        """Rows for those of ``ids`` that are stored (any order, no duplicates)."""

    @abstractmethod
    def put(self, ns_id: int, batch: EntryBatch, stats: PendingStats) -> None:
        """Atomically insert ``batch`` (ignoring ids already present) and merge ``stats``."""

    @abstractmethod
    def delete(self, ns_id: int, ids: Sequence[int]) -> int:
        """Delete entries of ``ns_id`` by id; return how many were removed."""

    @abstractmethod
    def flush_stats(self, stats: PendingStats) -> None:
        """Merge buffered counters and last-use touches in one transaction."""

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
