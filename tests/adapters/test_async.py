"""Async: concurrent tasks share one provider call per text, and the event loop never waits on the cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from cachedembed import Cached
from tests.adapters.conftest import words_vector
from tests.conftest import FakeEF


class SlowEF(FakeEF):
    """A foreign embedding function that takes ``delay`` seconds per call (blocking, like an SDK)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        time.sleep(self.delay)
        return super().__call__(input)


async def ticks_during(work: Awaitable[Any], period: float = 0.01) -> tuple[Any, float]:
    """Run ``work`` while a ticker runs on the same loop; return its result and the longest gap between ticks."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(period)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        done.set()
        await task
    return result, max(gaps)


async def test_tasks_asking_for_the_same_texts_make_one_provider_call_per_text(
    sqlite_url: str,
) -> None:
    slow = SlowEF(delay=0.3)
    ef = Cached(slow, sqlite_url)
    texts = [f"shared {i}" for i in range(11)]
    # Overlapping requests: every text is wanted by several tasks at once.
    requests = [texts[i % 4 : i % 4 + 8] for i in range(10)]
    assert set().union(*requests) == set(texts)
    results = await asyncio.gather(*(ef.acall(r) for r in requests))
    assert sorted(slow.texts_embedded) == sorted(texts)
    by_text = {
        t: v.tobytes()
        for r, out in zip(requests, results, strict=True)
        for t, v in zip(r, out, strict=True)
    }
    for r, out in zip(requests, results, strict=True):
        assert [v.tobytes() for v in out] == [by_text[t] for t in r]
    stats = ef.stats()
    assert stats["misses"] == len(texts) and stats["hits"] == sum(map(len, requests)) - len(texts)


async def test_query_tasks_share_a_langchain_call(sqlite_url: str) -> None:
    calls: list[str] = []

    class SlowQueries(Embeddings):
        model = "words-256"

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise AssertionError("queries only")

        def embed_query(self, text: str) -> list[float]:
            calls.append(text)
            time.sleep(0.3)
            return words_vector(text)

    embeddings = Cached(SlowQueries(), sqlite_url)
    vectors = await asyncio.gather(*(embeddings.aembed_query("what is cached?") for _ in range(8)))
    assert calls == ["what is cached?"]
    assert all(v == vectors[0] for v in vectors)


async def test_a_slow_provider_does_not_block_the_event_loop(sqlite_url: str) -> None:
    ef = Cached(SlowEF(delay=0.5), sqlite_url)
    vectors, longest_gap = await ticks_during(ef.acall(["a", "b"]))
    assert len(vectors) == 2
    assert longest_gap < 0.4, (
        f"the loop stalled for {longest_gap:.3f}s"
    )  # blocked, it would be >= 0.5


async def test_slow_store_reads_do_not_block_the_event_loop(sqlite_url: str) -> None:
    fake = FakeEF()
    ef = Cached(fake, sqlite_url)
    ef(["a", "b"])
    store = ef.store
    real_get: Callable[..., Any] = store._get_rows

    def slow_get(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)  # a remote database on a bad day
        return real_get(*args, **kwargs)

    store._get_rows = slow_get  # type: ignore[method-assign]
    try:
        vectors, longest_gap = await ticks_during(ef.aembed_query(["a"]))
        hits, longest_hit_gap = await ticks_during(ef.acall(["a", "b"]))
    finally:
        del store._get_rows  # back to the class's method
    assert len(vectors) == 1 and len(hits) == 2 and len(fake.calls) == 2
    assert max(longest_gap, longest_hit_gap) < 0.4, (
        "the loop waited on the store"
    )  # blocked: >= 0.5
