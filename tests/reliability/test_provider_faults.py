"""Provider faults over real HTTP: what is retried, what the user sees, what is (never) cached.

The provider is a small OpenAI-shaped embedding function over cachedembed's own
``JsonHttpClient``, talking to a loopback server that can answer with rate limits, server
errors, slow responses, dropped connections and malformed vectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached, ProviderError, ProviderResponseError
from cachedembed.embedding_functions import EmbeddedBatch, ProviderEmbeddingFunction
from cachedembed.embedding_functions._base import as_matrix, batches
from cachedembed.embedding_functions._http import JsonHttpClient, RetryPolicy
from cachedembed.keys import Role
from cachedembed.stores import open_store
from tests.conftest import fake_vector
from tests.providers.loopback import LoopbackServer, Reply, Request
from tests.reliability._helpers import all_entries, same_bits, stats_total

DIM = 8
ATTEMPTS = 3


class LoopbackEF(ProviderEmbeddingFunction):
    """An OpenAI-compatible ``/v1/embeddings`` client: batches, retries, validates."""

    provider = "loopback"

    def __init__(
        self, base_url: str, model_name: str = "loop-1", batch_size: int = 2, timeout: float = 0.5
    ) -> None:
        self.base_url = base_url
        self.model_name = model_name
        self.batch_size = batch_size
        self.timeout = timeout
        policy = RetryPolicy(
            max_attempts=ATTEMPTS, base_delay=0.01, max_delay=2.0, max_elapsed=10.0
        )
        self.client = JsonHttpClient(self.provider, base_url, timeout=timeout, retry=policy)

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        for start, chunk in batches(texts, self.batch_size):
            body, _headers = self.client.post(
                "/v1/embeddings", {"model": self.model_name, "input": list(chunk)}
            )
            data = sorted(body["data"], key=lambda d: d["index"])
            vectors = as_matrix(self.provider, [d["embedding"] for d in data], len(chunk))
            yield EmbeddedBatch(start, vectors, int(body["usage"]["prompt_tokens"]))

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model_name}

    def get_config(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model_name": self.model_name}


def vector(text: str) -> list[float]:
    return [float(x) for x in fake_vector(text, DIM, "loop")]


def answer(request: Request) -> Reply:
    """The well-behaved provider: one vector per input, in order, with usage."""
    texts = request.body["input"]
    data = [
        {"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(texts)
    ]
    return Reply(body={"object": "list", "data": data, "usage": {"prompt_tokens": 3 * len(texts)}})


def body_with(vectors: list[Any]) -> dict[str, Any]:
    return {
        "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": 1},
    }


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[LoopbackServer]:
    # One server for the module: shutting one down costs half a second of polling.
    with LoopbackServer(answer) as srv:
        yield srv


@pytest.fixture
def server(_shared_server: LoopbackServer) -> LoopbackServer:
    """The shared server, reset to a well-behaved provider with no recorded requests."""
    with _shared_server._lock:
        _shared_server.requests.clear()
        _shared_server.faults.clear()
    _shared_server.handler = answer
    return _shared_server


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cache.db'}"


def cached_texts(url: str) -> set[str | None]:
    return {e.text for e in all_entries(open_store(url))}


def test_rate_limit_waits_for_retry_after_then_succeeds(server: LoopbackServer, url: str) -> None:
    server.fail_next(
        Reply(
            status=429,
            body={"error": {"message": "Rate limit reached"}},
            headers={"Retry-After": "0.4"},
        )
    )
    ef = Cached(LoopbackEF(server.url), url)
    started = time.monotonic()
    got = ef.embed(["a", "b"])
    assert time.monotonic() - started >= 0.4  # the server's Retry-After was honoured
    assert len(server.requests) == 2
    assert same_bits(got, np.array([vector("a"), vector("b")], np.float32))


# The client's timeout, per fault: short where every attempt is meant to time out (three of
# them are the test's whole wait), the default elsewhere so a busy machine never turns a
# 503 into a timeout.
SHORT_TIMEOUT = 0.2


@pytest.mark.parametrize(
    ("fault", "cause", "timeout"),
    [
        (
            Reply(
                status=429,
                body={"error": {"message": "Rate limit reached"}},
                headers={"Retry-After": "0"},
            ),
            "HTTP 429: Rate limit reached",
            0.5,
        ),
        (Reply(status=503, body={"error": {"message": "overloaded"}}), "HTTP 503: overloaded", 0.5),
        (Reply(status=500, raw=b"<html>boom</html>"), "HTTP 500: <html>boom</html>", 0.5),
        (
            Reply(delay=1.0, body=body_with([vector("a")])),
            f"timed out after {SHORT_TIMEOUT}s",
            SHORT_TIMEOUT,
        ),
        (Reply(drop=True), "connection to", 0.5),
    ],
    ids=["429", "503", "500-html", "timeout", "dropped"],
)
def test_transient_faults_are_retried_a_bounded_number_of_times(
    server: LoopbackServer, url: str, fault: Reply, cause: str, timeout: float
) -> None:
    server.fail_next(*[fault] * 10)  # more failures than the policy will try
    ef = Cached(LoopbackEF(server.url, timeout=timeout), url, store_text=True)
    with pytest.raises(ProviderError) as info:
        ef.embed(["a"])
    message = str(info.value)
    assert message.startswith("loopback")  # names the provider ...
    assert cause in message  # ... and the cause
    assert f"gave up after {ATTEMPTS} attempts" in message
    assert len(server.requests) == ATTEMPTS
    assert cached_texts(url) == set()
    assert "Traceback" not in message and "\n" not in message


def test_a_transient_fault_then_success_is_invisible(server: LoopbackServer, url: str) -> None:
    server.fail_next(Reply(status=502), Reply(drop=True))
    ef = Cached(LoopbackEF(server.url), url)
    assert same_bits(ef.embed(["x"]), np.array([vector("x")], np.float32))
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(server: LoopbackServer, url: str) -> None:
    server.fail_next(Reply(status=400, body={"error": {"message": "input too long"}}))
    with pytest.raises(ProviderError, match=r"^loopback returned HTTP 400: input too long$"):
        Cached(LoopbackEF(server.url), url).embed(["a"])
    assert len(server.requests) == 1


MALFORMED = {
    "too-few": (body_with([vector("a")]), "expected 2 vectors, got 1"),
    "too-many": (body_with([vector("a"), vector("b"), vector("c")]), "expected 2 vectors, got 3"),
    "ragged": (body_with([vector("a"), vector("b")[:5]]), "ragged vectors"),
    "not-numbers": (body_with([vector("a"), ["x"] * DIM]), "not numbers"),
    "empty-dim": (body_with([[], []]), "dimension 0"),
    "nan": (None, "NaN or infinite"),
    "inf": (None, "NaN or infinite"),
    "float32-overflow": (body_with([vector("a"), [1e39] * DIM]), "NaN or infinite"),
}


def malformed_reply(kind: str) -> Reply:
    body, _cause = MALFORMED[kind]
    if body is not None:
        return Reply(body=body)
    # Strict JSON has no NaN or Infinity; Python's json (and so requests) accepts both.
    token = "NaN" if kind == "nan" else "-Infinity"
    row = ", ".join([token] + ["0.5"] * (DIM - 1))
    raw = f'{{"data": [{{"index": 0, "embedding": [{row}]}}, {{"index": 1, "embedding": [{row}]}}], "usage": {{"prompt_tokens": 2}}}}'
    return Reply(raw=raw.encode())


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 -> float32
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_vectors_are_rejected_never_cached_and_not_retried(
    server: LoopbackServer, url: str, kind: str
) -> None:
    server.fail_next(malformed_reply(kind))
    ef = Cached(LoopbackEF(server.url), url, store_text=True)
    with pytest.raises(ProviderResponseError) as info:
        ef.embed(["a", "b"])
    assert str(info.value).startswith("loopback failed: malformed response:")
    assert MALFORMED[kind][1] in str(info.value)
    assert len(server.requests) == 1  # a malformed answer is a bug, not bad luck: no retry
    assert cached_texts(url) == set()
    assert stats_total(open_store(url)).misses == 0
    # The next call asks the provider again and caches the good answer.
    assert same_bits(ef.embed(["a", "b"]), np.array([vector("a"), vector("b")], np.float32))
    assert cached_texts(url) == {"a", "b"}


def test_dimension_change_within_a_namespace_is_refused(server: LoopbackServer, url: str) -> None:
    ef = Cached(LoopbackEF(server.url), url, store_text=True)
    ef.embed(["a", "b"])
    server.fail_next(Reply(body=body_with([vector("c")[:4], vector("d")[:4]])))
    with pytest.raises(
        ProviderResponseError, match="returned 4-d vectors but this namespace holds 8-d ones"
    ):
        ef.embed(["c", "d"])
    assert cached_texts(url) == {"a", "b"}


def test_batches_before_a_failure_are_cached_and_not_paid_twice(
    server: LoopbackServer, url: str
) -> None:
    texts = ["t1", "t2", "t3", "t4", "t5", "t6"]  # three batches of two
    seen = 0

    def third_batch_fails(request: Request) -> Reply:
        nonlocal seen
        seen += 1
        if seen == 3:
            return Reply(status=400, body={"error": {"message": "bad batch"}})
        return answer(request)

    server.handler = third_batch_fails
    ef = Cached(LoopbackEF(server.url), url, store_text=True)
    with pytest.raises(ProviderError, match="bad batch"):
        ef.embed(texts)
    assert cached_texts(url) == {"t1", "t2", "t3", "t4"}
    assert stats_total(open_store(url)).misses == 4  # the counters paid for what is stored

    server.handler = answer
    before = len(server.requests)
    got = ef.embed(texts)
    assert [r.body["input"] for r in server.requests[before:]] == [["t5", "t6"]]
    assert same_bits(got, np.array([vector(t) for t in texts], np.float32))
    stats = stats_total(open_store(url))
    assert (stats.misses, stats.hits) == (6, 4)
