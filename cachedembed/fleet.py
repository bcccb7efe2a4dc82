"""Single-flight across processes and hosts: a text one worker is embedding is not paid for twice.

In-process, :class:`~cachedembed.flight.SingleFlight` already makes concurrent callers of
one store share a provider call. Here the same holds for every process sharing a store:
before embedding its misses, a call *leases* them in the store (one statement per batch);
it embeds the ones it was granted, renewing their leases while the provider works, and
releases them once stored. Misses leased by someone else are waited for by polling the
store (one read per poll, backing off), served as they appear, and taken over when their
lease runs out without an entry: a killed worker delays the others by at most its lease.

Leases are an optimisation, never a dependency: when the store cannot take them, a call
embeds as it would without them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import ConfigurationError, StoreError
from .stores.base import UNREGISTERED_NS

if TYPE_CHECKING:
    from .stores import Store

log = logging.getLogger("cachedembed")
_T = TypeVar("_T")

DEFAULT_LEASE = 30.0
"""Seconds a lease lasts when none is configured (or more: three provider batches' time)."""
FIRST_POLL = 0.02
MAX_POLL = 0.5
"""Seconds between polls of the store for an entry leased elsewhere: 20 ms, doubling to at
most 500 ms (or to the provider's observed latency, when shorter)."""

Serve = Callable[[Any, np.ndarray], np.ndarray]
"""``serve(call, positions)``: fill those of ``positions`` now stored; return the ones filled."""
Embed = Callable[[Any, np.ndarray], None]
"""``embed(call, positions)``: embed and store ``positions`` (the call's provider path)."""


def check_lease(lease: object) -> float | None:
    """Refuse a lease that is not a non-negative number of seconds (0: no leases)."""
    if lease is None:
        return None
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease >= 0:
        raise ConfigurationError(
            f"lease must be a number of seconds (0 turns leases off), got {lease!r}"
        )
    return float(lease)


class Leases:
    """The lease side of one wrapper's misses: claim, embed what was granted, wait for the rest."""

    def __init__(self, store: Store, lease: float | None = None) -> None:
        self.store = store
        self.fixed = check_lease(lease)
        self.slowest = 0.0
        """Longest provider batch seen (seconds): an adaptive lease lasts at least three of them."""
        self._owner = ""
        self._owner_pid = -1

    @property
    def enabled(self) -> bool:
        return self.store.shares_leases and self.fixed != 0

    @property
    def seconds(self) -> float:
        """How long a lease lasts: the configured length, or adapted to the provider's latency."""
        if self.fixed:
            return self.fixed
        return max(DEFAULT_LEASE, 3 * self.slowest)

    @property
    def owner(self) -> str:
        """Who this process is in the lease records: host, pid and a random part (new after a fork)."""
        if self._owner_pid != os.getpid():
            self._owner_pid = os.getpid()
            host = socket.gethostname()[:40]
            self._owner = f"{host}:{self._owner_pid}:{uuid.uuid4().hex[:12]}"
        return self._owner

    def fill(self, call: Any, mine: np.ndarray, serve: Serve, embed: Embed) -> None:
        """Get the vectors of ``mine`` (positions into ``call.uniq`` this process claimed).

        Each round claims what is still missing, serves what another process stored since,
        embeds what it was granted, and otherwise sleeps before polling again. The claim
        comes before the read: an entry stored by the holder of a lease is committed before
        that lease is released, so a granted lease whose entry is not there is truly a miss.
        """
        ns_id = call.state.ns.id
        if not self.enabled or ns_id == UNREGISTERED_NS:
            pending = mine[~np.isin(mine, serve(call, mine))]
            if len(pending):
                embed(call, pending)
            return
        pending, delay, claimed_at, first = mine, FIRST_POLL, 0.0, True
        while True:
            claim = time.monotonic() - claimed_at >= min(1.0, self.seconds / 2)
            if claim:
                claimed_at = time.monotonic()
            pending = self._round(call, pending, claim, first, serve, embed)
            if not len(pending):
                return
            time.sleep(delay)
            delay = min(delay * 2, self._poll_cap())
            first = False

    def _round(
        self, call: Any, pending: np.ndarray, claim: bool, first: bool, serve: Serve, embed: Embed
    ) -> np.ndarray:
        """One claim (when due), read and embed over ``pending``; the positions still missing."""
        ns_id = call.state.ns.id
        granted = self._claim(ns_id, call.uniq[pending]) if claim else np.zeros(len(pending), bool)
        try:
            try:
                served = serve(call, pending)
            except StoreError:
                if first:
                    raise  # as without leases: the first read's failure is the call's
                # The store failed mid-wait: embed the rest rather than fail the call.
                served, granted = pending[:0], np.ones(len(pending), dtype=bool)
            own = pending[granted & ~np.isin(pending, served)]
            if len(own):
                self._embed_leased(call, own, embed)
        finally:
            if granted.any():
                self._release(ns_id, call.uniq[pending[granted]])
        return pending[~np.isin(pending, served) & ~np.isin(pending, own)]

    def _poll_cap(self) -> float:
        """Longest wait between polls: 500 ms, or this process's slowest provider batch if shorter
        (an entry embedded elsewhere takes about that long to appear)."""
        return min(MAX_POLL, max(FIRST_POLL, self.slowest)) if self.slowest else MAX_POLL

    def _embed_leased(self, call: Any, own: np.ndarray, embed: Embed) -> None:
        with self._renewing(call.state.ns.id, call.uniq[own]):
            embed(call, own)
        if call.result.provider_seconds:
            self.slowest = max(self.slowest, max(call.result.provider_seconds))

    def _claim(self, ns_id: int, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` this process may embed; all of them when the store cannot say."""
        granted = self._guarded(
            "take leases; embedding without",
            self.store.claim_leases,
            ns_id,
            ids.tolist(),
            self.owner,
            int(self.seconds * 1000),
        )
        return np.ones(len(ids), bool) if granted is None else np.array(granted, dtype=bool)

    def _release(self, ns_id: int, ids: np.ndarray) -> None:
        # On failure the leases run out by themselves.
        self._guarded("release leases", self.store.release_leases, ns_id, ids.tolist(), self.owner)

    def _guarded(self, what: str, op: Callable[..., _T], *args: Any) -> _T | None:
        """``op(*args)``, or ``None`` when it failed: leases are an optimisation, never a
        reason to fail a call. Skipped while the store's writes are failing: the store's own
        writes probe it, and a lease's small write must neither take a probe nor end an outage."""
        if self.store.outage.writes.failing:
            return None
        try:
            return op(*args)
        except StoreError as exc:
            log.debug("cache %s: could not %s (%s)", self.store.url, what, exc)
            return None

    @contextmanager
    def _renewing(self, ns_id: int, ids: np.ndarray) -> Iterator[None]:
        """Renew the leases of ``ids`` every third of a lease while the provider call runs."""
        stop = threading.Event()
        seconds = self.seconds
        args = (ns_id, ids.tolist(), self.owner, int(seconds * 1000))

        def renew() -> None:
            # A failed renewal is retried at the next tick; meanwhile the lease may lapse.
            while not stop.wait(seconds / 3):
                self._guarded("renew leases", self.store.renew_leases, *args)

        thread = threading.Thread(target=renew, name="cachedembed-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
