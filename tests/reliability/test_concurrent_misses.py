"""Misses embedded with several requests at once keep every guarantee of the sequential path.

Real OpenAI SDK against a loopback server speaking OpenAI's wire format, real SQLite.
Concurrency is proven, not assumed: where it matters, the server holds requests at a
barrier that only enough simultaneous requests can pass (a sequential client breaks it
and the test fails). No timed assertions: bounds are on counts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached, ProviderError
from cachedembed.embedding_functions import OpenAIEmbeddingFunction
from cachedembed.embedding_functions._http import RetryPolicy
from cachedembed.embedding_functions._limits import RateLimiter
from cachedembed.stores import open_store
from tests.providers import test_openai
from tests.providers.fakes import serve, tokens_of
from tests.providers.loopback import LoopbackServer, Reply, Request
from tests.providers.scenarios import FAST, same_bits
from tests.reliability._helpers import all_entries, stats_total

BATCH = 3
TEXTS = [f"passage {i}: " + "word " * (i % 7) for i in range(30)]


class Served:
    def __init__(self, fake: Any, server: LoopbackServer) -> None:
        self.fake = fake
        self.server = server

    def make(self, **options: Any) -> OpenAIEmbeddingFunction:
        ef = OpenAIEmbeddingFunction(
            model_name=self.fake.model,
            api_base=f"{self.server.url}/v1",
            **{"retry": FAST, **options},
        )
        ef.max_batch = BATCH
        return ef

    def expected(self, texts: list[str]) -> np.ndarray:
        return self.fake.expected(texts)

    def sent_texts(self) -> list[str]:
        return [t for r in self.server.requests for t in r.body["input"]]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    fake = test_openai.OpenAIFake()
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    with serve(fake) as server:
        yield Served(fake, server)


def held_at_barrier(served: Served, parties: int) -> threading.Barrier:
    """The first ``parties`` requests wait for each other: only concurrent requests get through."""
    barrier = threading.Barrier(parties, timeout=20)
    seen = iter(range(parties))
    original = served.fake

    def answer(request: Request) -> Reply:
        if next(seen, None) is not None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return Reply(500, original.error_body("requests were not concurrent"))
        return original(request)

    served.server.handler = answer
    return barrier


def cached_texts(url: str) -> set[str | None]:
    return {e.text for e in all_entries(open_store(url))}


def test_concurrent_misses_give_exact_vectors_in_input_order_and_exact_counters(
    served: Served, sqlite_url: str
) -> None:
    held_at_barrier(served, 4)
    texts = TEXTS + TEXTS[::3]  # duplicates, embedded once
    cached = Cached(served.make(), sqlite_url, concurrency=4)
    vectors = cached(texts)
    assert same_bits(vectors, served.expected(texts))
    assert sorted(served.sent_texts()) == sorted(TEXTS)
    stats = cached.stats()
    assert stats["misses"] == len(TEXTS) and stats["hits"] == len(TEXTS[::3])
    assert stats["provider_calls"] == len(served.server.requests) == len(TEXTS) // BATCH
    assert stats["tokens_embedded"] == sum(tokens_of(t) for t in TEXTS)
    assert stats["tokens_embedded_estimated"] == 0
    assert same_bits(cached(texts), served.expected(texts))  # and served from the cache


def test_remote_providers_default_to_concurrent_requests(served: Served, sqlite_url: str) -> None:
    held_at_barrier(served, 2)
    cached = Cached(served.make(), sqlite_url)
    assert cached.concurrency == OpenAIEmbeddingFunction.default_concurrency > 1
    assert same_bits(cached(TEXTS[:12]), served.expected(TEXTS[:12]))


def test_one_failing_batch_among_many_keeps_the_others_vectors(
    served: Served, sqlite_url: str
) -> None:
    poisoned = TEXTS[13]
    answered: list[str] = []
    original = served.fake

    def answer(request: Request) -> Reply:
        if poisoned in request.body["input"]:
            return Reply(400, original.error_body("this batch is rejected"))
        answered.extend(request.body["input"])
        return original(request)

    served.server.handler = answer
    ef = served.make()
    cached = Cached(ef, sqlite_url, concurrency=4, store_text=True)
    with pytest.raises(ProviderError, match="this batch is rejected"):
        cached(TEXTS)
    assert ef.limiter.wait_idle(10)
    kept = cached_texts(sqlite_url)
    # Every batch the server answered before the failure was committed, whole.
    assert kept == set(answered) and poisoned not in kept
    served.server.handler = original
    before = len(served.sent_texts())
    assert same_bits(cached(TEXTS), served.expected(TEXTS))
    assert sorted(served.sent_texts()[before:]) == sorted(set(TEXTS) - kept)
    assert cached.stats()["tokens_embedded"] == sum(tokens_of(t) for t in TEXTS)


def test_interrupt_mid_run_keeps_finished_batches_and_sends_nothing_more(
    served: Served, sqlite_url: str
) -> None:
    ef = served.make()
    cached = Cached(ef, sqlite_url, concurrency=4, store_text=True)
    write = cached.store.write
    writes = 0

    def interrupted_write(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        result = write(*args, **kwargs)
        writes += 1
        if writes == 2:
            raise KeyboardInterrupt  # Ctrl-C right after the second batch was committed
        return result

    cached.store.write = interrupted_write  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        cached(TEXTS)
    assert ef.limiter.wait_idle(10), "requests still in flight after the interrupt"
    kept = cached_texts(sqlite_url)
    assert len(kept) == 2 * BATCH  # the two finished batches, whole
    # Nothing was sent after the interrupt: at most the requests then in flight.
    assert len(served.server.requests) <= 2 + cached.concurrency
    cached.store.write = write  # type: ignore[method-assign]
    before = len(served.sent_texts())
    assert same_bits(cached(TEXTS), served.expected(TEXTS))  # no claim left hanging
    assert sorted(served.sent_texts()[before:]) == sorted(set(TEXTS) - kept)


def test_429_storm_is_ridden_out_with_a_bounded_number_of_429s(
    served: Served, sqlite_url: str
) -> None:
    storm = {"left": 0.5, "started": None}
    retry_after = 0.1
    throttled = 0
    lock = threading.Lock()
    original = served.fake

    def answer(request: Request) -> Reply:
        nonlocal throttled
        with lock:
            now = time.monotonic()
            started = storm["started"] = storm["started"] or now
            if now - started < storm["left"]:
                throttled += 1
                return Reply(
                    429,
                    {
                        "error": {
                            "message": "Rate limit reached",
                            "type": "requests",
                            "code": "rate_limit_exceeded",
                        }
                    },
                    {"retry-after": str(retry_after)},
                )
        return original(request)

    served.server.handler = answer
    patient = RetryPolicy(max_attempts=50, max_elapsed=60, base_delay=0.01, max_delay=0.5)
    ef = served.make(retry=patient)
    cached = Cached(ef, sqlite_url, concurrency=4)
    assert same_bits(cached(TEXTS), served.expected(TEXTS))
    # Each 429 pauses every request of the provider for Retry-After and halves the window:
    # about one probe per pause, after the first round. (Four threads retrying on their
    # own would send 4 x 0.5 / 0.1 = 20 and more.) One more round of the window is allowed
    # for a loaded machine, where a pause can end a little before the storm does.
    assert 1 <= throttled <= 4 + 2 * round(storm["left"] / retry_after) + 4
    assert ef.limiter.throttled_count == throttled
    assert cached.stats()["tokens_embedded"] == sum(tokens_of(t) for t in TEXTS)


def test_one_limiter_bounds_every_wrapper_and_thread_using_the_provider(
    served: Served, tmp_path: Any
) -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()
    two_in = threading.Barrier(2, timeout=20)
    original = served.fake

    def answer(request: Request) -> Reply:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            with contextlib.suppress(threading.BrokenBarrierError):
                two_in.wait()  # holds until a second request is in flight too
            return original(request)
        finally:
            with lock:
                in_flight -= 1

    served.server.handler = answer
    ef = served.make()
    ef.limiter = RateLimiter(max_concurrency=2)
    wrappers = [Cached(ef, f"sqlite:///{tmp_path / f'c{i}.db'}", concurrency=4) for i in range(2)]
    halves = [TEXTS[:15], TEXTS[15:]]
    results: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, wrappers[i].embed(halves[i])))
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 2  # 8 threads asked; the provider instance allowed two at a time
    for i in range(2):
        assert same_bits(results[i], served.expected(halves[i]))
        assert stats_total(wrappers[i].store).tokens_embedded == sum(
            tokens_of(t) for t in halves[i]
        )
