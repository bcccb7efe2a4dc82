"""Rate limits and adaptive concurrency, one :class:`RateLimiter` per provider instance.

Every request attempt of a remote provider (first tries and retries alike) passes
through its function's limiter, so every :class:`~cachedembed.Cached` wrapper and thread
that uses the instance shares one budget:

* ``requests_per_minute`` / ``tokens_per_minute``: token buckets refilled continuously,
  holding at most :attr:`RateLimiter.burst_seconds` of budget, so requests go out evenly
  instead of in a burst the server refuses. A request's tokens are estimated before it
  is sent (:func:`~cachedembed.usage.estimate_tokens`) and corrected by the usage the
  provider reports. A request larger than the bucket waits for a full bucket and runs
  it into debt, so huge batches still average out at the limit.
* Adaptive concurrency (AIMD): a 429 halves the number of requests allowed in flight
  (once per round of requests: answers to requests sent before the cut do not cut
  again), each success adds one, up to :attr:`RateLimiter.max_concurrency`.
* ``Retry-After`` / ``retry-after-ms`` on a 429 pause every request of the instance,
  not only the one retried.
* OpenAI's ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*``
  headers pace before the limit is hit: the limit sets the refill rate when none was
  configured, and the remaining budget (less what is still in flight) caps the bucket.

The clock is injectable so the pacing can be tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import ConfigurationError

DEFAULT_MAX_CONCURRENCY = 16
"""Requests in flight per provider instance when nothing slowed it down."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI reset header (``12ms``, ``1s``, ``6m0s``, ``1h2m3.5s``, or a bare number)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


class _Bucket:
    """A continuously refilled budget (requests or tokens) that may run into debt."""

    def __init__(self, per_minute: float, burst_seconds: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * burst_seconds, 1.0)
        self.level = self.capacity
        self.updated: float | None = None

    def refill(self, now: float) -> None:
        if self.updated is not None:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` may be spent (a cost over the capacity waits for a full bucket)."""
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


@dataclass
class Permit:
    """One request attempt admitted by a :class:`RateLimiter`; report how it ended exactly once."""

    limiter: RateLimiter
    tokens: int
    epoch: int
    open: bool = True

    def succeeded(self, headers: Mapping[str, str] | None = None) -> None:
        self.limiter._finish(self, headers, throttled=False, retry_after=None)

    def throttled(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """The server answered 429 (``retry_after``: what it said to wait)."""
        self.limiter._finish(self, headers, throttled=True, retry_after=retry_after)

    def failed(self) -> None:
        """Any other failure: frees the slot, changes no pace."""
        self.limiter._finish(self, None, throttled=False, retry_after=None, success=False)


class RateLimiter:
    """Requests and tokens per minute, plus an AIMD window of requests in flight.

    Thread-safe, and shared by coroutines of any event loop (:meth:`aacquire`); one per
    provider instance (``ef.limiter``).
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ConfigurationError(
                f"max_concurrency must be a positive integer, got {max_concurrency!r}"
            )
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_concurrency = max_concurrency
        self.burst_seconds = burst_seconds
        self.clock = clock
        self._requests = (
            _Bucket(requests_per_minute, burst_seconds) if requests_per_minute else None
        )
        self._tokens = _Bucket(tokens_per_minute, burst_seconds) if tokens_per_minute else None
        self.window = float(max_concurrency)
        """Requests allowed in flight now (AIMD)."""
        self.in_flight = 0
        self._in_flight_tokens = 0
        self._paused_until = 0.0
        self._epoch = 0
        self.throttled_count = 0
        """429 answers seen, for reports and tests."""
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- admission --------------------------------------------------------------

    def wait_time(self, tokens: int = 0) -> float:
        """Seconds before a request of ``tokens`` estimated tokens may go out (0: now)."""
        with self._cond:
            return self._wait_locked(tokens)

    def _wait_locked(self, tokens: int) -> float:
        now = self.clock()
        wait = max(self._paused_until - now, 0.0)
        if self._requests is not None:
            self._requests.refill(now)
            wait = max(wait, self._requests.wait(1))
        if self._tokens is not None and tokens:
            self._tokens.refill(now)
            wait = max(wait, self._tokens.wait(tokens))
        return wait

    def acquire(self, tokens: int = 0) -> Permit:
        """Block until a request of ``tokens`` estimated tokens may be sent; spend its budget."""
        with self._cond:
            while True:
                permit, wait = self._try_admit(tokens)
                if permit is not None:
                    return permit
                self._cond.wait(wait)

    async def aacquire(self, tokens: int = 0) -> Permit:
        """:meth:`acquire` for a coroutine: waits without blocking its event loop.

        Threads and tasks of any loop share one budget. A task waiting for a free slot
        is woken by the request that frees it; one waiting for budget sleeps until the
        bucket holds it.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                permit, wait = self._try_admit(tokens)
                if permit is not None:
                    return permit
                woken = loop.create_future()
                self._async_waiters.append((loop, woken))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken, wait)

    def _try_admit(self, tokens: int) -> tuple[Permit | None, float | None]:
        """Admit one request now (spending its budget), or say how long to wait (``None``: until
        a request in flight finishes). Called with the lock held."""
        if self.in_flight >= max(int(self.window), 1):
            return None, None
        wait = self._wait_locked(tokens)
        if wait > 0:
            return None, wait
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= tokens
        self.in_flight += 1
        self._in_flight_tokens += tokens
        return Permit(self, tokens, self._epoch), None

    def _notify(self) -> None:
        """Wake every waiter, blocked threads and tasks alike, to try again. Lock held."""
        self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, woken in waiters:
            # A waiter's loop may have closed meanwhile (its task is gone with it).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, woken)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight (or ``timeout`` seconds); True when idle."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight == 0, timeout)

    def settle(self, estimated: int, reported: int | None) -> None:
        """Correct the token budget once the provider reported what a request really cost."""
        if reported is None or self._tokens is None:
            return
        with self._cond:
            self._tokens.level += estimated - reported
            self._notify()

    # -- feedback ---------------------------------------------------------------

    def _finish(
        self,
        permit: Permit,
        headers: Mapping[str, str] | None,
        *,
        throttled: bool,
        retry_after: float | None,
        success: bool = True,
    ) -> None:
        with self._cond:
            if not permit.open:
                return
            permit.open = False
            self.in_flight -= 1
            self._in_flight_tokens -= permit.tokens
            if throttled:
                self.throttled_count += 1
                if permit.epoch == self._epoch:  # one cut per round of requests
                    self.window = max(1.0, self.window / 2)
                    self._epoch += 1
                if retry_after is not None:
                    self._paused_until = max(self._paused_until, self.clock() + retry_after)
            elif success:
                self.window = min(float(self.max_concurrency), self.window + 1)
            if headers:
                self._pace_from_headers(headers)
            self._notify()

    def _pace_from_headers(self, headers: Mapping[str, str]) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        now = self.clock()
        for kind, others in (("requests", self.in_flight), ("tokens", self._in_flight_tokens)):
            remaining = _number(lower.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is None:
                continue
            bucket = self._learned_bucket(kind, _number(lower.get(f"x-ratelimit-limit-{kind}")))
            if bucket is not None:
                bucket.refill(now)
                # What the server has left, less what we sent since it counted this request.
                bucket.level = min(bucket.level, remaining - others)
            elif remaining - others <= 0:
                # No rate to refill at: wait until the server says its budget is back.
                reset = parse_duration(lower.get(f"x-ratelimit-reset-{kind}"))
                if reset is not None:
                    self._paused_until = max(self._paused_until, now + reset)

    def _learned_bucket(self, kind: str, limit: float | None) -> _Bucket | None:
        """The bucket for ``kind``, created from the server's announced limit when none was set."""
        bucket = self._requests if kind == "requests" else self._tokens
        if bucket is None and limit is not None and limit > 0:
            bucket = _Bucket(limit, self.burst_seconds)
            bucket.updated = self.clock()
            if kind == "requests":
                self._requests = bucket
            else:
                self._tokens = bucket
        return bucket


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
