"""Up to N batch requests at once, yielded as they complete.

Used by every embedder that can send batches in parallel (the remote providers, and
foreign functions when asked): :class:`~cachedembed.Cached` commits each batch as it
arrives, whatever its position, so the order of completion does not matter.

At most ``concurrency`` jobs are ever submitted ahead, so when a batch fails, or the
caller stops (``KeyboardInterrupt``, an error while storing a batch), nothing new is
sent: the requests already in flight finish in their worker threads and are dropped,
the ones that finished before are kept (the caller has them), and the first error is
raised once the in-flight batches have been yielded.

:func:`run_on_loop` is the same for an asyncio call (``Cached.acall``): the engine runs in
one worker thread (the stores are blocking), and each batch request is a coroutine on the
caller's event loop, so N requests in flight cost N tasks, not N threads. There, requests
in flight when the caller stops or is cancelled are cancelled, not left to finish.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import Any, TypeVar

from ..errors import ConfigurationError

T = TypeVar("T")


def check_concurrency(value: object) -> int:
    """``value`` when it is a positive integer; a one-line error otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"concurrency must be a positive integer, got {value!r}")
    return value


def run_jobs(jobs: Sequence[Callable[[], T]], concurrency: int) -> Iterator[T]:
    """Each job's result, in order of completion, with at most ``concurrency`` running."""
    if concurrency <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job()
        return
    waiting = iter(jobs)
    pool = ThreadPoolExecutor(min(concurrency, len(jobs)), thread_name_prefix="cachedembed")
    running: set[Future[T]] = {pool.submit(job) for job in islice(waiting, concurrency)}
    error: BaseException | None = None
    try:
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                failure = future.exception()
                if failure is not None:
                    error = error or failure
                else:
                    yield future.result()
            if error is None:
                running |= {pool.submit(job) for job in islice(waiting, len(done))}
        if error is not None:
            raise error
    finally:
        for future in running:
            future.cancel()
        # Do not wait for requests in flight: their results are dropped.
        pool.shutdown(wait=False, cancel_futures=True)


class AsyncScope:
    """The event loop an async call's provider requests run on, and the way to cancel them.

    Built by the coroutine that awaits the call (on ``loop``'s thread); the engine's worker
    thread passes it down to :func:`run_on_loop`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.cancelled = False
        self._drivers: set[Future[None]] = set()
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Cancel the requests in flight, and refuse new ones (from any thread)."""
        with self._lock:
            self.cancelled = True
            drivers = list(self._drivers)
        for driver in drivers:
            driver.cancel()

    def _start(self, driver: Callable[[], Future[None]]) -> Future[None]:
        with self._lock:
            if self.cancelled:
                raise asyncio.CancelledError()
            future = driver()
            self._drivers.add(future)
            return future

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._drivers.discard(future)


_DRAIN_SECONDS = 30.0
"""How long a stopped consumer waits for the cancelled requests to unwind (a closed loop never does)."""


def run_on_loop(
    scope: AsyncScope, jobs: Sequence[Callable[[], Awaitable[T]]], concurrency: int
) -> Iterator[T]:
    """:func:`run_jobs` for coroutine jobs, run as tasks on ``scope.loop`` by another thread.

    Yields each result in order of completion; the first failure stops new jobs and is
    raised once the running ones have been yielded. When the consumer stops early (or the
    scope is cancelled), the running tasks are cancelled and awaited before this returns.
    """
    if _running_loop() is scope.loop:
        raise RuntimeError("run_on_loop blocks: call it from a worker thread, not from its loop")
    results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    finished = threading.Event()

    async def drive() -> None:
        error: BaseException | None = None
        try:
            error = await _drive(jobs, concurrency, results)
        except BaseException as exc:  # cancelled: the consumer or the scope stopped it
            error = exc
            raise
        finally:
            results.put((False, error))
            finished.set()

    driver = scope._start(lambda: asyncio.run_coroutine_threadsafe(drive(), scope.loop))
    try:
        while True:
            ok, value = results.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        driver.cancel()
        finished.wait(_DRAIN_SECONDS)
        scope._done(driver)


async def _drive(
    jobs: Sequence[Callable[[], Awaitable[T]]],
    concurrency: int,
    results: queue.SimpleQueue[tuple[bool, Any]],
) -> BaseException | None:
    """Run ``jobs`` with at most ``concurrency`` at once, putting each result on ``results``;
    return the first failure (after the running jobs ended), or ``None``."""
    waiting = iter(jobs)
    running: set[asyncio.Future[T]] = set()

    def start(n: int) -> None:
        running.update(asyncio.ensure_future(job()) for job in islice(waiting, n))

    error: BaseException | None = None
    start(concurrency)
    try:
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = asyncio.CancelledError() if task.cancelled() else task.exception()
                if failure is not None:
                    error = error or failure
                else:
                    results.put((True, task.result()))
            if error is None:
                start(len(done))
        return error
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
