"""Single-flight: concurrent requests for the same missing item make one provider call.

A caller *claims* the keys it will embed; keys already claimed by another thread are
returned as futures to wait on. A claimer resolves or fails every key it claimed before
it waits on anybody else's, so waits can never form a cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any


class SingleFlight:
    """Process-wide registry of in-flight keys (one per store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[Any]] = {}

    def claim(self, keys: Sequence[Hashable]) -> tuple[list[int], list[tuple[int, Future[Any]]]]:
        """Split ``keys`` into positions this caller now owns and futures owned by others."""
        mine: list[int] = []
        theirs: list[tuple[int, Future[Any]]] = []
        with self._lock:
            inflight = self._inflight
            for pos, key in enumerate(keys):
                fut = inflight.get(key)
                if fut is None:
                    inflight[key] = Future()
                    mine.append(pos)
                else:
                    theirs.append((pos, fut))
        return mine, theirs

    def resolve(self, items: Iterable[tuple[Hashable, Any]]) -> None:
        """Publish results for claimed keys and release them."""
        with self._lock:
            done = [(self._inflight.pop(key, None), value) for key, value in items]
        for fut, value in done:
            if fut is not None:
                fut.set_result(value)

    def fail(self, keys: Iterable[Hashable], exc: BaseException) -> None:
        """Release claimed keys that will not be resolved; waiters get ``exc``."""
        with self._lock:
            futures = [self._inflight.pop(key, None) for key in keys]
        for fut in futures:
            if fut is not None and not fut.done():
                fut.set_exception(exc)
