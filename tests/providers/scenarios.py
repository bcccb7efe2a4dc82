"""The behaviour every network provider must show, written once and run against each fake server.

Each provider's test module defines a ``case`` fixture (a :class:`Case`: its fake server,
a factory for its embedding function pointed at that server, the request fields documents
and queries carry) and a ``Test...`` subclass of :class:`ProviderContract` (or
:class:`KeyedProviderContract` for providers with API keys), which runs these tests
against it; provider-specific behaviour is tested in the module itself.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cachedembed import Cached, ProviderError, ProviderResponseError
from cachedembed.embedding_functions._http import RetryPolicy
from cachedembed.embedding_functions._remote import RemoteEmbeddingFunction
from cachedembed.exchange import export_cache
from cachedembed.redact import REDACTED
from cachedembed.usage import estimate_tokens
from tests.providers.fakes import FakeProvider, serve, tokens_of
from tests.providers.loopback import LoopbackServer, Reply

FAST = RetryPolicy(max_attempts=3, max_elapsed=5.0, base_delay=0.001, max_delay=0.2)
"""Retries with millisecond backoff, so fault tests stay fast (Retry-After up to 0.2 s is honoured)."""

TEXTS = ["alpha", "beta gamma", "δέλτα unicode ✓", "epsilon " * 20, "zeta", "eta theta"]


@dataclass
class Case:
    fake: FakeProvider
    server: LoopbackServer
    make: Callable[..., RemoteEmbeddingFunction]
    """``make(**overrides)``: the embedding function under test, pointed at the server, FAST retries."""
    document_fields: dict[str, Any] = field(default_factory=dict)
    query_fields: dict[str, Any] = field(default_factory=dict)

    def expected(self, texts: list[str], role: str = "document") -> np.ndarray:
        return self.fake.expected(
            texts, **(self.document_fields if role == "document" else self.query_fields)
        )

    @property
    def requests(self) -> int:
        return len(self.server.requests)


@contextmanager
def serving(
    fake: FakeProvider,
    build: Callable[..., RemoteEmbeddingFunction],
    options: Callable[[str], dict[str, Any]],
    document_fields: dict[str, Any] | None = None,
    query_fields: dict[str, Any] | None = None,
) -> Iterator[Case]:
    """``fake`` on a loopback server, and a :class:`Case` whose ``make(**overrides)`` calls
    ``build(**options(server_url), retry=FAST, **overrides)``."""
    with serve(fake) as server:

        def make(**overrides: Any) -> RemoteEmbeddingFunction:
            return build(**{"retry": FAST, **options(server.url), **overrides})

        yield Case(fake, server, make, document_fields or {}, query_fields or {})


def same_bits(a: Any, b: np.ndarray) -> bool:
    """Bit-identical float32 matrices (NaN-safe, -0.0 distinct from 0.0)."""
    a = np.asarray(np.stack(a) if isinstance(a, list) else a, dtype=np.float32)
    return a.shape == b.shape and bool(
        (a.view(np.uint32) == b.astype(np.float32).view(np.uint32)).all()
    )


def error(case: Case, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """The provider's own error response."""
    return Reply(status, case.fake.error_body(message), headers or {})


class ProviderContract:
    """Tests every network provider passes; subclass as ``Test...`` next to a ``case`` fixture."""

    rate_limits: ClassVar[list[tuple[dict[str, str], float]]] = [({"Retry-After": "0.05"}, 0.05)]
    """429 headers the provider sends, each with the wait it asks for."""
    reports_tokens: ClassVar[bool] = True
    """False for a provider that reports no usage: the stats then hold cachedembed's estimate."""

    def tokens(self, texts: list[str]) -> int:
        """What the stats must count for ``texts``: the fake's reported tokens, or the estimate."""
        if self.reports_tokens:
            return sum(tokens_of(t) for t in texts)
        return int(estimate_tokens(texts).sum())

    def test_vectors_exact_and_in_order(self, case: Case) -> None:
        """Documents and queries go out with their role's fields; vectors come back exact and in order."""
        ef = case.make()
        docs = ef(TEXTS)
        assert isinstance(docs, list) and len(docs) == len(TEXTS)
        assert all(v.dtype == np.float32 for v in docs)
        assert same_bits(docs, case.expected(TEXTS))
        queries = ef.embed_query(TEXTS[:2])
        assert same_bits(queries, case.expected(TEXTS[:2], "query"))
        if case.document_fields != case.query_fields:
            assert not same_bits(queries, case.expected(TEXTS[:2]))

    def test_cached_second_call_makes_no_request(self, case: Case, sqlite_url: str) -> None:
        """Second call: no request, bit-identical vectors; stats hold exactly the server's tokens
        (or the estimate, all of it flagged, for a provider that reports none)."""
        cached = Cached(case.make(), sqlite_url)
        first = cached(TEXTS)
        sent = case.requests
        assert sent >= 1
        second = cached(TEXTS)
        assert case.requests == sent, "a cached call reached the provider"
        assert same_bits(first, case.expected(TEXTS)) and same_bits(second, case.expected(TEXTS))
        query = cached.embed_query(["alpha"])
        assert same_bits(query, case.expected(["alpha"], "query"))
        stats = cached.stats()
        assert stats["tokens_embedded"] == self.tokens(TEXTS) + self.tokens(["alpha"])
        assert stats["tokens_embedded_estimated"] == (
            0 if self.reports_tokens else stats["tokens_embedded"]
        )
        assert stats["misses"] == len(TEXTS) + 1 and stats["hits"] == len(TEXTS)
        assert stats["tokens_saved"] == self.tokens(TEXTS)
        assert stats["provider_calls"] == case.requests

    def test_batches_split_at_item_limit_in_order(self, case: Case) -> None:
        """Batches stop at the configured limit; vectors stay in input order across shuffled indexes."""
        ef = case.make()
        ef.max_batch = limit = 3
        texts = [f"text number {i}" for i in range(3 * limit + 1)]
        vectors = ef(texts)
        assert [len(b) for b in case.fake.batches] == [limit, limit, limit, 1]
        assert [t for b in case.fake.batches for t in b] == texts
        assert same_bits(vectors, case.expected(texts))

    def test_429_waits_as_told_then_succeeds(self, case: Case) -> None:
        """A 429 is retried after the wait the server asked for, then succeeds."""
        ef = case.make()
        for headers, wait in self.rate_limits:
            before = case.requests
            case.server.fail_next(error(case, 429, "rate limit exceeded", headers))
            started = time.monotonic()
            vectors = ef(TEXTS[:2])
            assert time.monotonic() - started >= wait
            assert case.requests == before + 2
            assert same_bits(vectors, case.expected(TEXTS[:2]))

    def test_500_and_dropped_connection_retried(self, case: Case) -> None:
        """A 5xx is retried; a dropped connection too."""
        ef = case.make()
        case.server.fail_next(error(case, 500, "internal error"), Reply(drop=True))
        vectors = ef(TEXTS[:2])
        assert case.requests == 3
        assert same_bits(vectors, case.expected(TEXTS[:2]))

    def test_timeout_retried(self, case: Case) -> None:
        """A response slower than the timeout counts as a retryable failure."""
        ef = case.make()
        ef.timeout = 0.3
        ef.prepare()  # SDK import and client setup are not part of the timed request
        case.server.fail_next(Reply(body={}, delay=1.0))
        started = time.monotonic()
        vectors = ef(TEXTS[:2])
        assert time.monotonic() - started < 1.0
        assert case.requests == 2
        assert same_bits(vectors, case.expected(TEXTS[:2]))

    def test_retries_bounded(self, case: Case) -> None:
        """A provider that keeps failing is tried FAST.max_attempts times, then the error names it."""
        ef = case.make()
        reply = error(case, 503, "overloaded")
        case.server.fail_next(*[reply] * 10)
        with pytest.raises(ProviderError) as info:
            ef(TEXTS[:1])
        assert case.requests == FAST.max_attempts
        assert info.value.status == reply.status and info.value.provider == ef.provider
        assert "gave up after 3 attempts" in str(info.value)

    def test_400_names_provider_status_and_message(self, case: Case) -> None:
        """A 400 is not retried and raises naming provider, status and the server's message."""
        ef = case.make()
        message = "input is not acceptable here"
        case.server.fail_next(error(case, 400, message))
        with pytest.raises(ProviderError) as info:
            ef(TEXTS[:1])
        assert case.requests == 1
        text = str(info.value)
        assert ef.provider in text and "400" in text and message in text
        assert info.value.status == 400 and not isinstance(info.value, ProviderResponseError)

    @pytest.mark.parametrize("kind", ["count", "nan", "ragged"])
    def test_malformed_response_raises_and_caches_nothing(
        self, case: Case, sqlite_url: str, kind: str
    ) -> None:
        """A response with a wrong vector count, NaN or ragged rows raises; nothing of it is cached."""
        cached = Cached(case.make(), sqlite_url)
        case.fake.corrupt = kind
        with pytest.raises(ProviderResponseError):
            cached(TEXTS[:3])
        assert cached.stats()["misses"] == 0
        case.fake.corrupt = None
        before = case.requests
        assert same_bits(cached(TEXTS[:3]), case.expected(TEXTS[:3]))
        assert case.requests == before + 1
        assert case.fake.batches[-1] == TEXTS[:3]

    def test_later_batch_failure_keeps_earlier_batches(self, case: Case, sqlite_url: str) -> None:
        """When the second batch fails, the first stays cached and is not requested again."""
        ef = case.make()
        ef.max_batch = 2
        cached = Cached(ef, sqlite_url)
        original = case.fake.__call__

        def fail_second(request: Any) -> Reply:
            return (
                error(case, 400, "rejected")
                if TEXTS[2] in case.fake.texts(request)
                else original(request)
            )

        case.server.handler = fail_second
        with pytest.raises(ProviderError):
            cached(TEXTS[:4])
        case.server.handler = original
        before = case.requests
        assert same_bits(cached(TEXTS[:2]), case.expected(TEXTS[:2]))
        assert case.requests == before
        assert same_bits(cached(TEXTS[:4]), case.expected(TEXTS[:4]))
        assert case.fake.batches[-1] == TEXTS[2:4]
        assert cached.stats()["tokens_embedded"] == self.tokens(TEXTS[:4])

    async def test_async_batches_go_out_together_as_coroutines(
        self, case: Case, sqlite_url: str
    ) -> None:
        """``acall``: the batches are in flight at once through the async client, on the
        event loop (no worker thread per request); vectors exact, in order, then cached."""
        ef = case.make()
        ef.max_batch = 2
        watch = InFlight(case)
        cached = Cached(ef, sqlite_url, concurrency=3)
        vectors = await cached.acall(TEXTS)
        assert same_bits(vectors, case.expected(TEXTS))
        assert sorted(map(tuple, case.fake.batches)) == sorted(
            tuple(TEXTS[i : i + 2]) for i in range(0, len(TEXTS), 2)
        )
        assert watch.most == 3, "the three batches were not in flight together"
        assert watch.pool_threads == set(), "a request ran in a worker thread"
        sent = case.requests
        assert same_bits(await cached.aembed_query(TEXTS[:1]), case.expected(TEXTS[:1], "query"))
        assert same_bits(await cached.acall(TEXTS), case.expected(TEXTS))
        assert case.requests == sent + 1  # the query; the documents were all hits
        stats = cached.stats()
        assert stats["misses"] == len(TEXTS) + 1 and stats["hits"] == len(TEXTS)
        assert stats["provider_calls"] == case.requests
        assert stats["tokens_embedded"] == self.tokens(TEXTS) + self.tokens(TEXTS[:1])

    async def test_async_429_storm_is_absorbed(self, case: Case, sqlite_url: str) -> None:
        """Every batch of an async call meets a 429 first: each waits as told and succeeds."""
        ef = case.make()
        ef.max_batch = 2
        headers, _wait = self.rate_limits[0]
        case.server.fail_next(*[error(case, 429, "slow down", headers)] * 3)
        vectors = await Cached(ef, sqlite_url, concurrency=3).acall(TEXTS)
        assert same_bits(vectors, case.expected(TEXTS))
        assert ef.limiter.throttled_count == 3 and ef.limiter.in_flight == 0

    async def test_async_failed_batch_keeps_the_others(self, case: Case, sqlite_url: str) -> None:
        """One batch refused among concurrent ones: the call raises, the batches that
        arrived stay cached, and nothing is left in flight."""
        ef = case.make()
        ef.max_batch = 2
        original = case.fake.__call__

        def refuse_middle(request: Any) -> Reply:
            if TEXTS[2] in case.fake.texts(request):
                return error(case, 400, "rejected")
            return original(request)

        case.server.handler = refuse_middle
        cached = Cached(ef, sqlite_url, concurrency=3)
        with pytest.raises(ProviderError):
            await cached.acall(TEXTS)
        assert ef.limiter.in_flight == 0
        case.server.handler = original
        before = case.requests
        assert same_bits(await cached.acall(TEXTS), case.expected(TEXTS))
        assert case.requests == before + 1 and case.fake.batches[-1] == TEXTS[2:4]


class InFlight:
    """Wraps a case's server handler to record how many requests were in flight at once,
    and which of cachedembed's worker-pool threads existed while one was served."""

    def __init__(self, case: Case, delay: float = 0.3) -> None:
        self.most = 0
        self.pool_threads: set[threading.Thread] = set()
        self._now = 0
        self._lock = threading.Lock()
        handler = case.server.handler
        earlier = set(_pool_threads())  # an earlier test's pool may still be winding down

        def watched(request: Any) -> Reply:
            with self._lock:
                self._now += 1
                self.most = max(self.most, self._now)
                self.pool_threads |= set(_pool_threads()) - earlier
            try:
                time.sleep(delay)  # long enough for the other batches to arrive meanwhile
                return handler(request)
            finally:
                with self._lock:
                    self._now -= 1

        case.server.handler = watched


def _pool_threads() -> list[threading.Thread]:
    """The threads of the pools blocking calls send concurrent batches from."""
    return [t for t in threading.enumerate() if t.name.startswith("cachedembed_")]


def _key_encodings(key: str) -> dict[str, str]:
    raw = key.encode()
    return {
        "verbatim": key,
        "upper case": key.upper(),
        "lower case": key.lower(),
        "base64": base64.b64encode(raw).decode(),
        "url-safe base64 inside other data": base64.urlsafe_b64encode(
            b"user:" + raw + b"!"
        ).decode(),
    }


def _with_key_in_vectors(body: Any, key: str) -> bool:
    """Put ``key`` where the first vector value (or base64 vector) is; True once done."""
    items = body.values() if isinstance(body, dict) else body if isinstance(body, list) else []
    if isinstance(body, list) and body and all(isinstance(x, float) for x in body):
        body[0] = key
        return True
    for value in list(items):
        if isinstance(body, dict) and value is body.get("embedding") and isinstance(value, str):
            body["embedding"] = key
            return True
        if _with_key_in_vectors(value, key):
            return True
    return False


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


class EchoedKeyContract:
    """A key the server echoes back, in its error text or inside vectors, in any case or as
    base64, never appears in an exception's text nor in any exception chained to it."""

    @pytest.mark.parametrize("encoding", list(_key_encodings("k")))
    def test_a_key_echoed_in_an_error_never_reaches_the_exception(
        self, case: Case, encoding: str
    ) -> None:
        echoed = _key_encodings(case.fake.key)[encoding]
        case.server.fail_next(error(case, 401, f"Incorrect API key provided: {echoed}"))
        with pytest.raises(ProviderError) as info:
            case.make()(["a text"])
        for exc in _chain(info.value):
            assert echoed not in str(exc) + repr(exc) and case.fake.key not in str(exc)
        assert REDACTED in str(info.value)

    def test_a_key_echoed_inside_the_vectors_never_reaches_the_exception(self, case: Case) -> None:
        original = case.server.handler
        key = case.fake.key

        def echo_in_vectors(request: Any) -> Reply:
            reply = original(request)
            assert _with_key_in_vectors(reply.body, key)
            return reply

        case.server.handler = echo_in_vectors
        with pytest.raises(ProviderError) as info:
            case.make()(["a text"])
        for exc in _chain(info.value):
            assert key not in str(exc) + repr(exc)


class KeyedProviderContract(ProviderContract, EchoedKeyContract):
    """The contract plus key hygiene, for providers that take an API key."""

    def test_api_key_never_leaks(
        self,
        case: Case,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The key never reaches the cache files, config, stats, repr, logs or error text.

        The server's errors quote the key, as real services do for a rejected one (a retried
        429 logged at debug level, then a 401); the client must scrub it.
        """
        key = case.fake.key
        caplog.set_level(logging.DEBUG)
        ef = case.make()
        cache_dir = tmp_path / "cache"
        cache_dir.mkdir()
        cached = Cached(ef, f"sqlite:///{cache_dir / 'cache.db'}", store_text=True)
        cached(TEXTS)
        cached.embed_query(TEXTS[:2])
        echo = f"Incorrect API key provided: {key}"
        case.server.fail_next(
            error(case, 429, echo, {"retry-after-ms": "1"}), error(case, 401, echo)
        )
        with pytest.raises(ProviderError) as info:
            cached(["a text that is not cached yet"])
        assert case.requests >= 2
        print(cached.stats(), repr(cached), repr(ef))
        logging.getLogger("cachedembed").debug("config %s", cached.get_config())
        cached.flush()
        export_cache(cached.store, cache_dir / "export.jsonl.gz")
        captured = capsys.readouterr()
        surfaces = {
            "error": str(info.value) + repr(info.value),
            "get_config": json.dumps(ef.get_config()) + json.dumps(cached.get_config()),
            "stats": json.dumps(cached.stats(), default=str),
            "logs": caplog.text,
            "stdout": captured.out,
            "stderr": captured.err,
        }
        assert REDACTED in surfaces["error"]
        for where, text in surfaces.items():
            assert key not in text, f"API key leaked into {where}"
        files = [p for p in cache_dir.rglob("*") if p.is_file()]
        assert files
        assert (cache_dir / "export.jsonl.gz") in files
        for path in files:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            assert key.encode() not in data, f"API key leaked into {path.name}"
