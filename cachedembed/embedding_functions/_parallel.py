"""Up to N batch requests at once, yielded as they complete.

Used by every embedder that can send batches in parallel (the remote providers, and
foreign functions when asked): :class:`~cachedembed.Cached` commits each batch as it
arrives, whatever its position, so the order of completion does not matter.

At most ``concurrency`` jobs are ever submitted ahead, so when a batch fails, or the
caller stops (``KeyboardInterrupt``, an error while storing a batch), nothing new is
sent: the requests already in flight finish in their worker threads and are dropped,
the ones that finished before are kept (the caller has them), and the first error is
raised once the in-flight batches have been yielded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import TypeVar

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
