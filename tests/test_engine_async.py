"""Async calls: the misses go out as coroutines on the caller's loop, with the guarantees of blocking calls.

Run against the real OpenAI SDK (its ``AsyncOpenAI`` client) and a loopback server that
speaks OpenAI's wire format, so the requests are real HTTP on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from cachedembed import Cached
from cachedembed.embedding_functions import OpenAIEmbeddingFunction
from cachedembed.embedding_functions._limits import RateLimiter
from cachedembed.embedding_functions._parallel import AsyncScope, run_on_loop
from tests.adapters.conftest import words_vector
from tests.providers.fakes import serve
from tests.providers.loopback import LoopbackServer, Reply, Request
from tests.providers.scenarios import FAST, same_bits
from tests.providers.test_openai import OpenAIFake


class HeldFake(OpenAIFake):
    """Answers at once, except batches with a text starting "slow", held until released."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        if any(t.startswith("slow") for t in self.texts(request)):
            with self._lock:
                self.held += 1
            self.release.wait(10)
        return super().__call__(request)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> HeldFake:
    fake = HeldFake()
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    return fake


@pytest.fixture
def server(fake: HeldFake) -> Iterator[LoopbackServer]:
    with serve(fake) as server:
        yield server
    fake.release.set()  # let held server threads end


def openai_at(server: LoopbackServer, fake: OpenAIFake) -> OpenAIEmbeddingFunction:
    ef = OpenAIEmbeddingFunction(model_name=fake.model, api_base=f"{server.url}/v1", retry=FAST)
    ef.max_batch = 1  # one request per text, so a call has many in flight
    return ef


def entries(cached: Cached) -> int:
    ns = cached.namespaces()[0]
    return sum(len(chunk) for chunk in cached.store.iter_entries(ns.id))


async def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def test_cancelling_cancels_the_requests_in_flight_and_keeps_the_batches_that_arrived(
    fake: HeldFake, server: LoopbackServer, sqlite_url: str
) -> None:
    ef = openai_at(server, fake)
    cached = Cached(ef, sqlite_url, concurrency=4)
    texts = ["fast 0", "fast 1", "slow 0", "slow 1"]
    task = asyncio.create_task(cached.acall(texts))
    await wait_until(lambda: fake.held == 2 and len(fake.batches) == 2 and entries(cached) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ef.limiter.in_flight == 0, "a request outlived the cancelled call"
    assert entries(cached) == 2
    fake.release.set()
    assert len(server.requests) == 4
    vectors = await cached.acall(texts)
    assert same_bits(vectors, fake.expected(texts))
    assert sorted(r.body["input"] for r in server.requests[4:]) == [["slow 0"], ["slow 1"]]


async def test_concurrent_tasks_pay_for_each_text_once(
    fake: HeldFake, server: LoopbackServer, sqlite_url: str
) -> None:
    cached = Cached(openai_at(server, fake), sqlite_url, concurrency=4)
    texts = [f"shared {i}" for i in range(12)]
    wanted = [texts[i % 5 : i % 5 + 7] for i in range(10)]  # every text wanted by several tasks
    results = await asyncio.gather(*(cached.acall(w) for w in wanted))
    for want, got in zip(wanted, results):
        assert same_bits(got, fake.expected(want))
    sent = Counter(t for batch in fake.batches for t in batch)
    assert sent == Counter(set().union(*wanted))
    stats = cached.session_stats()
    assert stats["misses"] == len(sent)
    assert stats["misses"] + stats["hits"] == sum(len(w) for w in wanted)


async def test_a_thread_and_a_task_share_one_flight(
    fake: HeldFake, server: LoopbackServer, sqlite_url: str
) -> None:
    """A blocking call in a thread and an async call on the loop, same slow texts: paid once."""
    cached = Cached(openai_at(server, fake), sqlite_url, concurrency=2)
    texts = ["slow a", "slow b"]
    thread_result: list[Any] = []
    thread = threading.Thread(target=lambda: thread_result.append(cached(texts)))
    thread.start()
    await wait_until(lambda: fake.held == 2)
    task = asyncio.create_task(cached.acall(texts))
    await asyncio.sleep(0.1)  # the task is now waiting on the thread's flights
    fake.release.set()
    vectors = await task
    await asyncio.to_thread(thread.join)
    assert same_bits(vectors, fake.expected(texts))
    assert same_bits(thread_result[0], fake.expected(texts))
    assert len(server.requests) == 2


def test_each_event_loop_gets_its_own_async_client(
    fake: HeldFake, server: LoopbackServer, sqlite_url: str
) -> None:
    """Two ``asyncio.run`` in a row (a script, a test suite): the second loop does not reuse
    the first one's connections, which closed with it."""
    ef = openai_at(server, fake)
    cached = Cached(ef, sqlite_url, concurrency=2)
    first = asyncio.run(cached.acall(["one", "two"]))
    second = asyncio.run(cached.acall(["three", "four"]))
    assert same_bits(first, fake.expected(["one", "two"]))
    assert same_bits(second, fake.expected(["three", "four"]))


async def test_too_many_tokens_splits_the_batch_on_the_loop_too(
    fake: HeldFake, server: LoopbackServer, sqlite_url: str
) -> None:
    """The exchange answers the API's max_tokens_per_request error by sending two halves, async too."""
    fake.max_tokens = 12
    ef = openai_at(server, fake)
    ef.max_batch = 4
    texts = ["x" * 20, "y" * 20, "z" * 20, "w" * 20]  # 7 fake tokens each: two are over 12
    vectors = await Cached(ef, sqlite_url).acall(texts)
    assert same_bits(vectors, fake.expected(texts))
    sizes = [len(r.body["input"]) for r in server.requests]
    assert sizes == [4, 2, 1, 1, 2, 1, 1]  # refused, halved, refused, halved...
    assert fake.batches == [[t] for t in texts]


class NativeAsync(Embeddings):
    """A LangChain model with its own async methods, recording the thread each ran on."""

    def __init__(self) -> None:
        self.model = "native-async-words"
        self.threads: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the async call should have used aembed_documents")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("the async call should have used aembed_query")

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.threads.append(threading.current_thread().name)
        await asyncio.sleep(0.01)
        return [words_vector(t) for t in texts]

    async def aembed_query(self, text: str) -> list[float]:
        self.threads.append(threading.current_thread().name)
        return words_vector(text)


async def test_a_langchain_models_own_async_methods_run_on_the_loop(sqlite_url: str) -> None:
    model = NativeAsync()
    embeddings = Cached(model, sqlite_url, batch_size=2)
    docs = await embeddings.aembed_documents(["apples and pears", "the deep ocean", "snow"])
    query = await embeddings.aembed_query("fish")
    loop_thread = threading.current_thread().name
    assert model.threads == [loop_thread] * 3  # two document batches and the query
    assert np.allclose(docs[1], words_vector("the deep ocean")) and len(query) == 256
    assert await embeddings.aembed_documents(["the deep ocean"]) == [docs[1]]
    assert len(model.threads) == 3


async def test_a_task_waits_for_a_rate_limit_slot_without_blocking_the_loop() -> None:
    limiter = RateLimiter(max_concurrency=1)
    held = limiter.acquire()
    waiter = asyncio.create_task(limiter.aacquire())
    ticks = 0
    for _ in range(5):  # the loop keeps running while the task waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert not waiter.done() and ticks == 5
    threading.Thread(target=held.succeeded).start()  # freed by another thread
    permit = await asyncio.wait_for(waiter, 5)
    assert limiter.in_flight == 1
    permit.succeeded()
    assert limiter.in_flight == 0


async def test_run_on_loop_refuses_to_block_its_own_loop() -> None:
    async def job() -> int:
        return 1

    with pytest.raises(RuntimeError, match="worker thread"):
        next(run_on_loop(AsyncScope(asyncio.get_running_loop()), [job], 1))
