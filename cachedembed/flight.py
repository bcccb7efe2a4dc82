"""Single-flight: concurrent requests for the same missing item make one provider call.

A caller *claims* the keys it will embed; keys already claimed by another thread are
returned as futures to wait on. A claimer resolves or fails every key it claimed before
it waits on anybody else's, so waits can never form a cycle.

A claim costs one dict entry per key; a :class:`~concurrent.futures.Future` (with its
lock and condition) is only made when a second caller actually waits for the key, and a
result value is only built for keys somebody waits on: a cold batch of thousands of
misses with no concurrent caller creates no per-key objects at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

_CLAIMED: Any = object()
"""Marks a key claimed by a caller that nobody waits on yet."""


class SingleFlight:
    """Process-wide registry of in-flight keys (one per store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[Any]] = {}  # or _CLAIMED

    def claim(self, keys: Sequence[Hashable]) -> tuple[list[int], list[tuple[int, Future[Any]]]]:
        """Split ``keys`` into positions this caller now owns and futures owned by others."""
        mine: list[int] = []
        theirs: list[tuple[int, Future[Any]]] = []
        with self._lock:
            inflight = self._inflight
            for pos, key in enumerate(keys):
                fut = inflight.get(key)
                if fut is None:
                    inflight[key] = _CLAIMED
                    mine.append(pos)
                else:
                    if fut is _CLAIMED:
                        fut = inflight[key] = Future()
                    theirs.append((pos, fut))
        return mine, theirs

    def resolve(self, keys: Sequence[Hashable], value_at: Callable[[int], Any]) -> None:
        """Release claimed ``keys``; waiters on ``keys[i]`` get ``value_at(i)`` (built only for them)."""
        with self._lock:
            pop = self._inflight.pop
            futures = [pop(key, None) for key in keys]
        for i, fut in enumerate(futures):
            if fut is not None and fut is not _CLAIMED:
                fut.set_result(value_at(i))

    def fail(self, keys: Iterable[Hashable], exc: BaseException) -> None:
        """Release claimed keys that will not be resolved; waiters get ``exc``."""
        with self._lock:
            futures = [self._inflight.pop(key, None) for key in keys]
        for fut in futures:
            if fut is not None and fut is not _CLAIMED and not fut.done():
                fut.set_exception(exc)
