"""What a store does while it is failing: circuit breaker, retry buffer, health state.

A cache outage (server down, network partition, disk full) must cost the caller nothing
but the provider's price: every call is served, so the wrapper must neither wait for a
connect timeout on every call nor open a connection per call. After a failure the store
is skipped for a while (1 s, doubling up to 30 s); when that wait is over, one operation
probes it, and the first success closes the breaker. Batches the provider was paid for
but that could not be written wait in a bounded buffer and are written when the store
answers again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import StoreError

if TYPE_CHECKING:
    from .base import EntryBatch

FIRST_WAIT = 1.0
"""Seconds the store is skipped after the first failure of an outage."""
MAX_WAIT = 30.0
"""The longest wait between two probes (the wait doubles after each failed probe)."""
SERVER_WAITS = (FIRST_WAIT, MAX_WAIT)
"""The waits of stores on a server (PostgreSQL, MySQL, Redis); local files use none."""
RETRY_BUFFER_BYTES = 64 * 2**20
"""Vector bytes of unsaved batches kept for a retry; the oldest are dropped beyond it."""


class StoreUnavailable(StoreError):
    """The store was skipped, not tried: it failed recently and its next probe is not due."""


@dataclass
class _Unsaved:
    ns_id: int
    batch: EntryBatch
    nbytes: int


class Breaker:
    """Skips one kind of operation (reads or writes) of a failing store, probing it once per wait.

    Reads and writes fail apart: a full or read-only disk still serves its hits.
    """

    def __init__(self, name: str, first_wait: float, max_wait: float) -> None:
        self.name = name
        """``reads`` or ``writes``."""
        self.first_wait = first_wait
        """0 never skips (local files fail fast: retrying each call costs nothing)."""
        self.max_wait = max_wait
        self.failing = False
        """Read without the lock on every operation: one attribute test when healthy."""
        self._lock = threading.Lock()
        self._wait = first_wait
        self._next_probe = 0.0
        self.since: float | None = None
        self.error = ""

    def allow(self) -> bool:
        """Whether to try now: always when healthy; once per wait while failing."""
        if not self.failing or not self.first_wait:
            return True
        with self._lock:
            now = time.monotonic()
            if not self.failing or now >= self._next_probe:
                # This caller probes; everybody else skips until the probe's own wait is over.
                self._next_probe = now + self._wait
                return True
            return False

    def probe_now(self) -> None:
        with self._lock:
            self._next_probe = 0.0

    def unavailable(self, url: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"cache {url}: {self.name} skipped while it is failing ({self.error.removeprefix(f'cache {url}: ')}); "
            f"next try in {self.retry_in():.1f} s"
        )

    def retry_in(self) -> float:
        return max(0.0, self._next_probe - time.monotonic()) if self.failing else 0.0

    def failed(self, exc: BaseException) -> None:
        """Open the breaker, or double its wait after a failed probe."""
        with self._lock:
            if not self.failing:
                self._wait = self.first_wait
                self.since = time.time()
            else:
                self._wait = min(self._wait * 2, self.max_wait)
            self.error = str(exc)
            self._next_probe = time.monotonic() + self._wait
            self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            with self._lock:
                self.failing = False
                self.since = None


class Outage:
    """The health of one store in this process: a breaker for reads, one for writes, the
    batches waiting to be written, and whether the outage was logged (thread-safe)."""

    def __init__(
        self,
        first_wait: float = FIRST_WAIT,
        max_wait: float = MAX_WAIT,
        buffer_bytes: int = RETRY_BUFFER_BYTES,
    ) -> None:
        self.reads = Breaker("reads", first_wait, max_wait)
        self.writes = Breaker("writes", first_wait, max_wait)
        self.buffer_bytes = buffer_bytes
        self.reported = False
        """An outage was logged and not yet ended by a success (log once per outage)."""
        self._lock = threading.Lock()
        self._unsaved: deque[_Unsaved] = deque()
        self._unsaved_bytes = 0
        self.dropped = 0
        """Entries of unsaved batches dropped (buffer full): embedded again when next asked for."""
        self.outages = 0
        """Outages logged by this process."""

    @property
    def failing(self) -> bool:
        return self.reads.failing or self.writes.failing

    def probe_now(self) -> None:
        """Let the next operations try the store at once (the store is known to be back)."""
        self.reads.probe_now()
        self.writes.probe_now()

    def start_report(self) -> bool:
        """Whether this failure is the first of an outage (the one to log)."""
        with self._lock:
            first, self.reported = not self.reported, True
            self.outages += first
            return first

    def end_report(self) -> bool:
        """Whether a success ends a logged outage (to log the recovery once)."""
        if not self.reported:
            return False
        with self._lock:
            ended, self.reported = self.reported, False
            return ended

    # -- retry buffer -----------------------------------------------------------

    def keep(self, ns_id: int, batch: EntryBatch) -> None:
        """Keep a paid-for batch that could not be written, dropping the oldest beyond the bound."""
        nbytes = int(batch.vectors.nbytes)
        with self._lock:
            self._unsaved.append(_Unsaved(ns_id, batch, nbytes))
            self._unsaved_bytes += nbytes
            while self._unsaved_bytes > self.buffer_bytes and self._unsaved:
                old = self._unsaved.popleft()
                self._unsaved_bytes -= old.nbytes
                self.dropped += len(old.batch)

    def take(self) -> _Unsaved | None:
        """The oldest unsaved batch, removed from the buffer (``put_back`` if writing it fails)."""
        with self._lock:
            if not self._unsaved:
                return None
            item = self._unsaved.popleft()
            self._unsaved_bytes -= item.nbytes
            return item

    def put_back(self, item: _Unsaved) -> None:
        with self._lock:
            self._unsaved.appendleft(item)
            self._unsaved_bytes += item.nbytes

    @property
    def has_unsaved(self) -> bool:
        return bool(self._unsaved)

    # -- reporting ----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` and ``/metrics`` report (errors are StoreError texts: no secrets)."""
        failing = [b for b in (self.reads, self.writes) if b.failing]
        with self._lock:
            unsaved = sum(len(u.batch) for u in self._unsaved)
            unsaved_bytes = self._unsaved_bytes
        return {
            "status": "failing" if failing else "ok",
            "reads": "failing" if self.reads.failing else "ok",
            "writes": "failing" if self.writes.failing else "ok",
            "error": failing[0].error if failing else None,
            "since": min(b.since or 0.0 for b in failing) if failing else None,
            "retry_in": round(min(b.retry_in() for b in failing), 3) if failing else 0.0,
            "outages": self.outages,
            "unsaved_entries": unsaved,
            "unsaved_bytes": unsaved_bytes,
            "dropped_entries": self.dropped,
        }
