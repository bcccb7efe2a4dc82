"""A store whose server was down when it was opened: it opens the real one once the server answers.

A process that starts during a cache outage (a worker restarted while Redis or the
database is down) must still answer from the provider, as a running one does. Building
:class:`~cachedembed.Cached` then gives it a :class:`DeferredStore`: a store like any
other to the engine, in an outage from the start. Each of its backend hooks first opens
the real store; until that succeeds the hook fails with the opening's
:class:`~cachedembed.errors.StoreError`, which the outage breaker paces (one attempt per
wait, 1 s doubling to 30 s) exactly as for a store that failed later. Once open, every
hook is the real store's, and the batches paid for during the outage are written from
the retry buffer as for any recovered store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING

from ..errors import StoreError
from .base import Store
from .outage import SERVER_WAITS

if TYPE_CHECKING:
    from ..keys import NamespaceSpec
    from ..usage import UsageDelta
    from .base import EntryBatch, ExportedEntry, Namespace, NamespaceUsage, PendingStats, Row

__all__ = ["DeferredStore", "open_or_defer"]

_LOCAL = ("sqlite://", "diskcache://", "memory://")


def store_of(cache: Store | str | None, *, fail_open: bool) -> Store:
    """``cache`` itself if it is a store, else opened from its URL: with ``fail_open``, a
    cache server down at start defers (:func:`open_or_defer`), as an outage later is survived."""
    from . import open_store

    if isinstance(cache, Store):
        return cache
    return open_or_defer(cache) if fail_open else open_store(cache)


def open_or_defer(url: str | None) -> Store:
    """:func:`~cachedembed.stores.open_store`, or a :class:`DeferredStore` when a cache
    server cannot be reached now. Local files still fail at once: there is no server to
    wait for, and their errors (a bad path, a damaged file) need the user."""
    from . import default_url, normalize_url, open_store, redact_url

    full = normalize_url(url or default_url())
    try:
        return open_store(full)
    except StoreError as exc:
        if full.startswith(_LOCAL):
            raise
        return DeferredStore(redact_url(full), partial(open_store, full), exc)


class DeferredStore(Store):
    """The store for ``url``, opened by ``opener`` on first use after the server came back."""

    outage_waits = SERVER_WAITS
    shares_leases = True

    def __init__(self, url: str, opener: Callable[[], Store], error: StoreError) -> None:
        super().__init__()
        self.url = url
        self._opener = opener
        self._real: Store | None = None
        self._opening = threading.Lock()
        # The outage starts now: the next attempt waits for the breaker, like any other.
        self.outage.writes.failed(error)
        self.outage.reads.failed(error)
        self.report_failure(error, "answering from the provider until the cache can be opened")

    def _store(self) -> Store:
        real = self._real
        if real is None:
            with self._opening:
                if self._real is None:
                    self._real = self._opener()
                    # What failed was reaching the server; writes get their chance at once.
                    self.outage.writes.succeeded()
                real = self._real
        return real

    # -- the backend hooks, each the real store's ------------------------------

    def _read_dimension(self, ns_id: int) -> int | None:
        return self._store()._read_dimension(ns_id)

    def _get_or_create_namespace(self, spec: NamespaceSpec) -> Namespace:
        return self._store()._get_or_create_namespace(spec)

    def _set_dimension(self, ns_id: int, dim: int) -> None:
        self._store()._set_dimension(ns_id, dim)

    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        return self._store()._get_rows(ns_id, ids)

    def _put(self, ns_id: int, batch: EntryBatch, stats: PendingStats) -> None:
        self._store()._put(ns_id, batch, stats)

    def _flush_stats(self, stats: PendingStats) -> None:
        self._store()._flush_stats(stats)

    def _insert_job(self, job_id: str, ns: int, state: str, created: int, doc: str) -> None:
        self._store()._insert_job(job_id, ns, state, created, doc)

    def _replace_job(self, job_id: str, rev: int, state: str, doc: str) -> bool:
        return self._store()._replace_job(job_id, rev, state, doc)

    def _job_rows(self, pending: bool) -> list[tuple[str, int, str, int, str | bytes]]:
        return self._store()._job_rows(pending)

    def namespaces(self) -> list[Namespace]:
        return self._store().namespaces()

    def delete(self, ns_id: int, ids: Sequence[int]) -> int:
        return self._store().delete(ns_id, ids)

    def iter_entries(self, ns_id: int, batch_size: int = 2000) -> Iterator[list[ExportedEntry]]:
        return self._store().iter_entries(ns_id, batch_size)

    def namespace_usage(self) -> dict[int, NamespaceUsage]:
        return self._store().namespace_usage()

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        return self._store().stats_rows(since_day)

    def set_recorded_dimension(self, ns_id: int, dim: int | None) -> None:
        self._store().set_recorded_dimension(ns_id, dim)

    def remove_namespace(self, ns_id: int, *, with_stats: bool) -> int:
        return self._store().remove_namespace(ns_id, with_stats=with_stats)

    def claim_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> list[bool]:
        return self._store().claim_leases(ns_id, ids, owner, ttl_ms)

    def renew_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> None:
        self._store().renew_leases(ns_id, ids, owner, ttl_ms)

    def release_leases(self, ns_id: int, ids: Sequence[int], owner: str) -> None:
        self._store().release_leases(ns_id, ids, owner)

    def bulk(self) -> AbstractContextManager[None]:
        return self._store().bulk()

    def schema_revision(self) -> str | None:
        return self._store().schema_revision()

    def upgrade(self) -> None:
        self._store().upgrade()

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
