"""What every provider reached over the network shares: keys, retries, batching, response parsing.

:class:`RemoteEmbeddingFunction` turns one method, :meth:`~RemoteEmbeddingFunction.exchange`
(the requests of one batch, as :class:`Request` values, and how to read the answers), into
provider-sized batches sent blocking or as asyncio coroutines, with the shared retry
policy and rate limiter, and keeps the API key out of every error and log line. Each
constructor argument is declared once, in the typed signature: ``keep_options(locals())``
stores them and :meth:`~RemoteEmbeddingFunction.get_config` returns them.
:class:`JsonEmbeddingFunction` adds the ``httpx`` transports for providers spoken to as
plain JSON over HTTP (Jina, Voyage, Ollama, ...); :class:`SdkEmbeddingFunction` the
official SDKs (OpenAI, Cohere, Gemini) and their async clients. Both build their
:attr:`client` lazily and name a non-default server in the cache namespace the same way. :func:`indexed_vectors` reads the
OpenAI-shaped ``data: [{index, embedding}]`` responses that several providers copy.
"""

from __future__ import annotations

import asyncio
import base64
import time
import weakref
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypedDict, TypeVar

import numpy as np

from ..errors import (
    CachedEmbedError,
    ConfigurationError,
    InvalidInputError,
    ProviderError,
    ProviderResponseError,
)
from ..keys import Role
from ..redact import redact_text, redact_url, url_identity, url_secrets
from ..usage import estimate_total_tokens
from ._base import EmbeddedBatch, ProviderEmbeddingFunction, api_key, as_matrix, batches
from ._http import (
    DEFAULT_RETRY,
    AsyncJsonHttpClient,
    JsonHttpClient,
    RetryPolicy,
    awith_retries,
    status_error,
    transport_error,
    with_retries,
)
from ._limits import RateLimiter
from ._parallel import AsyncScope, run_jobs, run_on_loop

R = TypeVar("R")


@dataclass(frozen=True)
class Request:
    """One provider request, as a provider's :meth:`~RemoteEmbeddingFunction.exchange` describes it.

    The provider says what to call; the base sends it, blocking or as a coroutine, under
    the retry policy and the rate limiter.
    """

    send: Callable[[Any], Any]
    """``send(client)`` makes the call: with :attr:`~RemoteEmbeddingFunction.client` it
    returns the answer, with :attr:`~RemoteEmbeddingFunction.aclient` an awaitable of it
    (the SDKs' async clients mirror their blocking ones)."""
    texts: Sequence[str] = ()
    """The texts it carries, counted against ``tokens_per_minute`` before it goes."""
    headers_of: Callable[[Any], Mapping[str, str] | None] | None = None
    """Reads an answer's rate-limit headers, which pace the next requests."""


Exchange = Generator[Request, Any, tuple[np.ndarray, "int | None"]]
"""A provider's conversation for one batch: it yields each :class:`Request`, receives the
answer (or has the request's error thrown in), and returns the vectors and reported tokens."""


class _Steps:
    """Walks an :data:`Exchange`: the next request, given the last one's answer or error."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self._resume: Callable[[Any], Request] = exchange.send
        self._value: Any = None
        self.result: tuple[np.ndarray, int | None] = (np.zeros((0, 0), np.float32), None)

    def next(self) -> Request | None:
        """The next request to send; ``None`` once the exchange returned :attr:`result`."""
        try:
            return self._resume(self._value)
        except StopIteration as done:
            self.result = done.value
            return None

    def answer(self, value: Any) -> None:
        self._resume, self._value = self._exchange.send, value

    def fail(self, exc: Exception) -> None:
        # Thrown into the exchange: one that does not catch it raises it from next().
        self._resume, self._value = self._exchange.throw, exc


class RemoteOptions(TypedDict, total=False):
    """The keyword arguments every remote provider takes, declared once."""

    retry: RetryPolicy | None
    """Retry policy (default: :data:`~cachedembed.embedding_functions._http.DEFAULT_RETRY`)."""
    requests_per_minute: float | None
    """Rate limit for this instance, shared by every wrapper and thread that uses it."""
    tokens_per_minute: float | None
    """Token rate limit (estimated before sending, corrected by the reported usage)."""


class RemoteEmbeddingFunction(ProviderEmbeddingFunction):
    """Base of the network providers: batching to documented limits, retries, secret hygiene.

    Subclasses set :attr:`max_batch` (and :attr:`max_batch_tokens` where the provider caps
    a request's tokens), pass ``retry``, ``requests_per_minute`` and ``tokens_per_minute``
    on to ``super().__init__``, call ``self.keep_options(locals())`` right after it, and
    implement :meth:`make_client`, :meth:`make_async_client` and :meth:`exchange`. Written
    once, an exchange runs both blocking (:meth:`embed_chunk`) and on an event loop
    (:meth:`aembed_chunk`, for ``Cached.acall``), with the same retries and limits.
    Tests and impatient callers pass a faster
    :class:`~cachedembed.embedding_functions._http.RetryPolicy` as ``retry=``.

    Every request attempt goes through :attr:`limiter`, one
    :class:`~cachedembed.embedding_functions._limits.RateLimiter` per instance, shared by
    every wrapper and thread that uses it.
    """

    default_concurrency: ClassVar[int] = 4

    max_batch: int = 1000
    """Most texts per request (the provider's documented limit); instances may lower it."""
    max_batch_tokens: int | None = None
    """Most input tokens per request, estimated at 4 UTF-8 bytes a token; ``None``: no cap."""
    rejects_empty: ClassVar[bool] = False
    """The provider answers 400 to an empty string: refuse it before any request."""

    config_keys: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments :meth:`get_config` returns, as attributes of the same name.
    Derived from the signature of the class's own ``__init__`` (every named argument but
    the :attr:`secret_args` and the shared :class:`RemoteOptions`), so each is declared once."""
    secret_args: ClassVar[frozenset[str]] = frozenset({"api_key"})
    """Constructor arguments never stored as attributes nor returned by :meth:`get_config`."""

    default_base_url: ClassVar[str] = ""
    """The provider's own server: any other is part of the cache namespace."""
    server_in_identity: ClassVar[bool] = True
    """A server other than the default is part of the cache namespace (it may serve another model)."""
    api_base: str | None = None
    timeout: float = 60.0

    _api_key: str | None = None
    _key_vars: Sequence[str] = ()
    _client: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__ and "config_keys" not in cls.__dict__:
            cls.config_keys = constructor_options(cls.__init__, cls.secret_args)

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> None:
        self.retry = retry or DEFAULT_RETRY
        self.limit_rate(requests_per_minute, tokens_per_minute)
        # One asyncio client per event loop: an async client's connections belong to its loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def limit_rate(
        self, requests_per_minute: float | None, tokens_per_minute: float | None
    ) -> None:
        """Give this instance its rate limits (the constructor's, or later ones from the CLI).

        A new :attr:`limiter`: set them before the first request, not while one is in flight.
        """
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)

    def keep_options(self, arguments: Mapping[str, Any]) -> None:
        """Store the constructor's ``arguments`` (its ``locals()``) as attributes: every one
        in :attr:`config_keys` of this class or a base; the key and the rest are ignored."""
        declared = {
            key for cls in type(self).__mro__ for key in cls.__dict__.get("config_keys", ())
        }
        for name in declared.intersection(arguments):
            setattr(self, name, arguments[name])

    @abstractmethod
    def exchange(self, texts: list[str], role: Role) -> Exchange:
        """The request(s) that embed one batch: yield each :class:`Request`, receive its
        answer, return the validated vectors and the tokens the provider reported."""

    def embed_chunk(self, texts: list[str], role: Role) -> tuple[np.ndarray, int | None]:
        """Embed one batch, blocking: its :meth:`exchange` run with :attr:`client`."""
        return self._drive(self.exchange(texts, role))

    async def aembed_chunk(self, texts: list[str], role: Role) -> tuple[np.ndarray, int | None]:
        """:meth:`embed_chunk` as a coroutine: the same exchange, with :attr:`aclient`."""
        return await self._adrive(self.exchange(texts, role))

    def _drive(self, exchange: Exchange) -> tuple[np.ndarray, int | None]:
        steps = _Steps(exchange)
        while (request := steps.next()) is not None:
            try:
                steps.answer(self.send(request))
            except Exception as exc:  # the exchange may answer it (OpenAI splits a batch)
                steps.fail(exc)
        return steps.result

    async def _adrive(self, exchange: Exchange) -> tuple[np.ndarray, int | None]:
        steps = _Steps(exchange)
        while (request := steps.next()) is not None:
            try:
                steps.answer(await self.asend(request))
            except Exception as exc:
                steps.fail(exc)
        return steps.result

    def send(self, request: Request) -> Any:
        """Send one request with :attr:`client`: retried, rate-limited, errors translated and scrubbed."""
        return self.retrying(
            lambda: self.call_client(lambda: request.send(self.client)),
            request.texts,
            request.headers_of,
        )

    async def asend(self, request: Request) -> Any:
        """:meth:`send` on the running event loop, with its :attr:`aclient`."""
        client = self.aclient
        return await awith_retries(
            self.provider,
            lambda: self._ascrubbed(lambda: self.acall_client(lambda: request.send(client))),
            self.retry,
            limiter=self.limiter,
            tokens=self.estimated_tokens(request.texts) if request.texts else 0,
            headers_of=request.headers_of,
        )

    def call_client(self, call: Callable[[], R]) -> R:
        """Run one client call; its errors come out as :class:`ProviderError` (retryable or not)."""
        try:
            return call()
        except Exception as exc:
            mapped = self.client_error(exc)
            if mapped is None:
                raise
        raise mapped  # outside the except block: the client's error is not its context

    async def acall_client(self, call: Callable[[], Awaitable[R]]) -> R:
        """:meth:`call_client` for an async client's call."""
        try:
            return await call()
        except Exception as exc:
            mapped = self.client_error(exc)
            if mapped is None:
                raise
        raise mapped

    def client_error(self, exc: Exception) -> ProviderError | None:
        """Ours for a client's own error, or ``None`` to let it through (JSON clients raise ours)."""
        return None

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        return self.embed_batches_concurrently(texts, role, 1)

    def embed_batches_concurrently(
        self, texts: Sequence[str], role: Role, concurrency: int, scope: AsyncScope | None = None
    ) -> Iterator[EmbeddedBatch]:
        if self.rejects_empty:
            empty = [i for i, t in enumerate(texts) if not t]
            if empty:
                raise InvalidInputError(
                    f"{self.provider} rejects empty strings; input[{empty[0]}] is empty"
                )
        limit = self._scrubbed(self.batch_limit)
        chunks = [
            (start, list(chunk)) for start, chunk in batches(texts, limit, self.max_batch_tokens)
        ]
        return self.run_exchanges(
            chunks, partial(self.exchange, role=role), concurrency, scope, self.estimated_tokens
        )

    def run_exchanges(
        self,
        chunks: Sequence[tuple[int, list[Any]]],
        exchange: Callable[[list[Any]], Exchange],
        concurrency: int,
        scope: AsyncScope | None,
        estimate: Callable[[list[Any]], int] | None = None,
    ) -> Iterator[EmbeddedBatch]:
        """Run ``exchange(chunk)`` for each ``(start, chunk)``, up to ``concurrency`` at once:
        in worker threads, or as coroutines on ``scope``'s loop. ``estimate`` gives the tokens
        a chunk was counted as, corrected against the limiter once the provider reports."""
        if scope is None:
            jobs = [partial(self._embed_batch, s, c, exchange, estimate) for s, c in chunks]
            return run_jobs(jobs, concurrency)
        ajobs = [partial(self._aembed_batch, s, c, exchange, estimate) for s, c in chunks]
        return run_on_loop(scope, ajobs, concurrency)

    def _embed_batch(
        self,
        start: int,
        chunk: list[Any],
        exchange: Callable[[list[Any]], Exchange],
        estimate: Callable[[list[Any]], int] | None,
    ) -> EmbeddedBatch:
        began = time.perf_counter()
        vectors, tokens = self._scrubbed(partial(self._drive, exchange(chunk)))
        return self._batch(start, chunk, vectors, tokens, estimate, began)

    async def _aembed_batch(
        self,
        start: int,
        chunk: list[Any],
        exchange: Callable[[list[Any]], Exchange],
        estimate: Callable[[list[Any]], int] | None,
    ) -> EmbeddedBatch:
        began = time.perf_counter()
        vectors, tokens = await self._ascrubbed(partial(self._adrive, exchange(chunk)))
        return self._batch(start, chunk, vectors, tokens, estimate, began)

    def _batch(
        self,
        start: int,
        chunk: list[Any],
        vectors: np.ndarray,
        tokens: int | None,
        estimate: Callable[[list[Any]], int] | None,
        began: float,
    ) -> EmbeddedBatch:
        if estimate is not None:
            self.limiter.settle(estimate(chunk), tokens)
        return EmbeddedBatch(start, vectors, tokens, time.perf_counter() - began)

    @staticmethod
    def estimated_tokens(texts: Sequence[str]) -> int:
        """What a request of ``texts`` is counted as against ``tokens_per_minute`` before it is sent."""
        return estimate_total_tokens(texts)

    @property
    def client(self) -> Any:
        """The blocking transport (an SDK client, a :class:`JsonHttpClient`), built on first use."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    @abstractmethod
    def make_client(self) -> Any:
        """Build :attr:`client` (importing the provider's SDK only now)."""

    @property
    def aclient(self) -> Any:
        """The asyncio transport for the running event loop (an SDK's async client, an
        :class:`AsyncJsonHttpClient`), built on first use on that loop."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = self.make_async_client()
        return client

    @abstractmethod
    def make_async_client(self) -> Any:
        """Build :attr:`aclient`: the async twin of :meth:`make_client`, same settings."""

    def prepare(self) -> None:
        self.client  # noqa: B018 - SDK import and client setup are not provider time

    def batch_limit(self) -> int:
        """Most texts per request now (:attr:`max_batch`; a server may announce a lower limit)."""
        return self.max_batch

    def resolve_key(self, explicit: str | None, env_vars: Sequence[str]) -> None:
        """Remember the key from ``explicit`` or the first set variable; a missing key fails on first use.

        Reading it now but failing later lets a fully cached workload run without a key.
        """
        # Each variable once: api_key_env_var often names a default already in the list.
        self._key_vars = list(dict.fromkeys(v for v in env_vars if v))
        self._api_key = api_key(explicit, self._key_vars)

    def require_key(self) -> str:
        """The key, or the one "no API key" error naming where it may come from."""
        if not self._api_key:
            names = " or ".join(f"${v}" for v in self._key_vars)
            remedy = f"pass api_key=... or set {names}" if names else "pass api_key=..."
            raise ConfigurationError(f"{self.provider}: no API key; {remedy}")
        return self._api_key

    def retrying(
        self,
        call: Callable[[], R],
        texts: Sequence[str] = (),
        headers_of: Callable[[R], Mapping[str, str] | None] | None = None,
    ) -> R:
        """Run one request for ``texts`` under the retry policy and the rate limiter, with
        the API key scrubbed from any error (``headers_of`` reads a result's rate-limit headers)."""
        return with_retries(
            self.provider,
            lambda: self._scrubbed(call),
            self.retry,
            limiter=self.limiter,
            tokens=self.estimated_tokens(texts) if texts else 0,
            headers_of=headers_of,
        )

    def secrets(self) -> list[str]:
        """Every credential this function sends: the key and any inside the server URL."""
        base = getattr(self, "base_url", None)
        return [
            s for s in (self._api_key, *url_secrets(base if isinstance(base, str) else None)) if s
        ]

    def _scrubbed(self, call: Callable[[], R]) -> R:
        # Scrub before with_retries sees the error (it logs retryable messages at debug
        # level), and again on the way out (parse errors may quote what the server sent).
        try:
            return call()
        except Exception as exc:
            clean = self._scrub(exc)
        raise clean  # outside the except block: the unredacted original is not its context

    async def _ascrubbed(self, call: Callable[[], Awaitable[R]]) -> R:
        try:
            return await call()
        except Exception as exc:
            clean = self._scrub(exc)
        raise clean

    def _scrub(self, exc: Exception) -> Exception:
        """``exc`` without any credential this function sends, as one of our errors."""
        if isinstance(exc, ProviderError):
            secrets = self.secrets()
            return exc.redacted(lambda text: redact_text(text, secrets))
        if isinstance(exc, CachedEmbedError):
            return exc  # ours, about the call itself: quotes no server text
        # An SDK's own error (a pydantic ValidationError quoting a response value...).
        return ProviderError(
            self.provider, redact_text(f"{type(exc).__name__}: {exc}", self.secrets())
        )

    def get_config(self) -> dict[str, Any]:
        """:attr:`config_keys` as attributes; URLs without their credentials (pass those again)."""
        return {name: redact_config_url(getattr(self, name)) for name in self.config_keys}

    @property
    def base_url(self) -> str | None:
        """Where requests go (without the endpoint path)."""
        return (self.api_base or self.default_base_url).rstrip("/")

    def server_identity(self) -> str | None:
        """The server as the cache namespace names it: ``None`` for the provider's own."""
        base = self.base_url
        if not base or not self.server_in_identity or base == self.default_base_url.rstrip("/"):
            return None
        return url_identity(base)

    def identity_with(self, params: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        """``provider`` plus the output-changing ``params`` and ``extra``, ``None`` values dropped.

        Dropping ``None`` keeps namespaces stable when a later version learns a new option.
        """
        return without_none({"provider": self.provider, **params, **extra})


class JsonEmbeddingFunction(RemoteEmbeddingFunction):
    """A provider spoken to as JSON over HTTP with ``httpx``: one POST per batch.

    Subclasses set :attr:`path` and :attr:`default_base_url`, store ``api_base``, and
    implement :meth:`params`; the default :meth:`parse_response` reads OpenAI-shaped
    responses (``data[].index``, ``usage.total_tokens``).
    """

    path: ClassVar[str]
    """Endpoint path appended to the base URL, e.g. ``/v1/embeddings``."""

    @abstractmethod
    def params(self, role: Role) -> dict[str, Any]:
        """Every request field except ``input`` for ``role``; unset ones left out."""

    def identity_params(self, role: Role) -> dict[str, Any]:
        """The request fields that change the vectors (all of :meth:`params` unless overridden)."""
        return self.params(role)

    def request_body(self, texts: list[str], role: Role) -> dict[str, Any]:
        return {**self.params(role), "input": texts}

    def parse_response(
        self, payload: Mapping[str, Any], headers: Mapping[str, str], expected: int
    ) -> tuple[np.ndarray, int | None]:
        """Vectors and reported tokens from one response (OpenAI-shaped by default)."""
        payload = json_object(self.provider, payload)
        vectors = indexed_vectors(self.provider, payload.get("data"), expected)
        return vectors, usage_tokens(payload, "usage", "total_tokens")

    @property
    def base_url(self) -> str:
        return (self.api_base or self.default_base_url).rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the key (``Authorization: Bearer`` by default); never logged."""
        return {"Authorization": f"Bearer {self.require_key()}"}

    client: JsonHttpClient  # the base's lazy property, typed

    def make_client(self) -> JsonHttpClient:
        return JsonHttpClient(self.provider, self.base_url, **self._transport_settings())

    def make_async_client(self) -> AsyncJsonHttpClient:
        return AsyncJsonHttpClient(self.provider, self.base_url, **self._transport_settings())

    def _transport_settings(self) -> dict[str, Any]:
        return {
            "headers": self.auth_headers(),
            "timeout": self.timeout,
            "retry": self.retry,
            "limiter": self.limiter,
        }

    def endpoint(self) -> str:
        """Where batches are POSTed, relative to the base URL (:attr:`path` by default)."""
        return self.path

    def exchange(self, texts: list[str], role: Role) -> Exchange:
        return (yield from self.exchange_body(self.request_body(texts, role), len(texts), texts))

    def exchange_body(
        self, body: Mapping[str, Any], expected: int, texts: Sequence[str] = ()
    ) -> Exchange:
        """POST one request ``body`` for ``expected`` inputs (``texts``, for the rate limiter);
        return its vectors and tokens as :meth:`parse_response` reads them."""
        path = self.endpoint()
        payload, headers = yield Request(
            lambda client: client.once("POST", path, body), texts, _answer_headers
        )
        return self.parse_response(payload, headers, expected)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return self.identity_with(self.identity_params(role), api_base=self.server_identity())


class SdkEmbeddingFunction(RemoteEmbeddingFunction):
    """A provider spoken to through its official SDK (OpenAI, Cohere, Gemini).

    Subclasses implement :meth:`make_client` and :meth:`make_async_client` with the SDK's
    own retries off (ours retry instead, so the two never multiply), and
    :meth:`client_error`, which turns the SDK's errors into :class:`ProviderError`.
    """

    def client_error(self, exc: Exception) -> ProviderError | None:
        """Ours for an SDK error, or ``None`` to let it through (by default: transport
        failures of httpx, which the SDKs use, are retryable)."""
        return transport_error(self.provider, exc, self.timeout)

    def status_error(
        self, status: int, body: Any, headers: Any, fallback: str | None = None
    ) -> ProviderError:
        """:func:`~._http.status_error` for an SDK's HTTP status error (headers may be ``None``)."""
        return status_error(self.provider, status, body, dict(headers or {}), fallback)


def indexed_vectors(provider: str, data: Any, expected: int) -> np.ndarray:
    """Vectors from OpenAI-shaped ``data: [{"index": i, "embedding": [...] | "<base64>"}]``, in index order.

    Indexes must be exactly ``0 .. expected-1`` (servers may return them in any order); a
    base64 string is little-endian float32, as the OpenAI API and its copies send it.
    """
    if not isinstance(data, list):
        raise ProviderResponseError(provider, f"expected a 'data' list, got {type(data).__name__}")
    rows: list[tuple[int, Any]] = []
    for pos, item in enumerate(data):
        index = item.get("index", pos) if isinstance(item, dict) else getattr(item, "index", pos)
        embedding = (
            item.get("embedding") if isinstance(item, dict) else getattr(item, "embedding", None)
        )
        if not isinstance(index, int):
            raise ProviderResponseError(provider, f"data[{pos}].index is not an integer")
        rows.append((index, decode_embedding(provider, embedding)))
    rows.sort(key=lambda r: r[0])
    if len(rows) == expected and [r[0] for r in rows] != list(range(expected)):
        raise ProviderResponseError(provider, f"response indexes are not 0..{expected - 1}")
    vectors = [r[1] for r in rows]
    one_width = len({len(v) if isinstance(v, bytes) else -1 for v in vectors}) == 1
    if (
        vectors
        and one_width
        and isinstance(vectors[0], bytes)
        and vectors[0]
        and len(vectors) == expected
    ):
        # All base64 and one width: one join and one frombuffer, no per-row arrays.
        matrix = np.frombuffer(b"".join(vectors), dtype="<f4").reshape(expected, -1)
        return as_matrix(provider, matrix, expected)
    return as_matrix(
        provider,
        [np.frombuffer(v, dtype="<f4") if isinstance(v, bytes) else v for v in vectors],
        expected,
    )


def json_object(provider: str, payload: Any) -> Mapping[str, Any]:
    """``payload`` when it is a JSON object; a :class:`ProviderResponseError` otherwise."""
    if not isinstance(payload, dict):
        raise ProviderResponseError(
            provider, f"expected a JSON object, got {type(payload).__name__}"
        )
    return payload


def _answer_headers(answer: tuple[Any, Mapping[str, str]]) -> Mapping[str, str]:
    return answer[1]


def decode_embedding(provider: str, embedding: Any) -> Any:
    """A float list as is, or a base64 string decoded to its little-endian float32 bytes."""
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except ValueError:
            raise ProviderResponseError(provider, "embedding is a string but not base64") from None
        if len(raw) % 4:
            raise ProviderResponseError(
                provider, f"base64 embedding has {len(raw)} bytes, not a whole number of float32"
            )
        return raw
    return embedding


def usage_tokens(payload: Mapping[str, Any], *path: str) -> int | None:
    """An integer token count at ``payload[path[0]][path[1]]...``, or ``None`` when absent."""
    value: Any = payload
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def constructor_options(init: Callable[..., None], secret: frozenset[str]) -> tuple[str, ...]:
    """The named arguments of ``init`` (in order) but ``self``, ``secret`` ones and ``**``."""
    import inspect

    kinds = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    params = list(inspect.signature(init).parameters.values())[1:]
    return tuple(p.name for p in params if p.kind not in kinds and p.name not in secret)


def named_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's ``locals()`` as keyword arguments to forward: its named ones only."""
    return {k: v for k, v in arguments.items() if k not in ("self", "remote", "__class__")}


def redact_config_url(value: Any) -> Any:
    """A config value as persisted: a URL without its credentials, anything else as is."""
    return redact_url(value) if isinstance(value, str) else value


def without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` without the unset (``None``) ones: what a request or namespace omits."""
    return {k: v for k, v in fields.items() if v is not None}
