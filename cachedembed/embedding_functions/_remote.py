"""What every provider reached over the network shares: keys, retries, batching, response parsing.

:class:`RemoteEmbeddingFunction` turns one method, :meth:`~RemoteEmbeddingFunction.embed_chunk`
(send one batch, return its vectors and tokens), into provider-sized batches with the
shared retry policy, and keeps the API key out of every error and log line. Each
constructor argument is declared once, in the typed signature: ``keep_options(locals())``
stores them and :meth:`~RemoteEmbeddingFunction.get_config` returns them.
:class:`JsonEmbeddingFunction` adds the ``requests`` transport for providers spoken to as
plain JSON over HTTP (Jina, Voyage, Ollama, ...); :class:`SdkEmbeddingFunction` the
official SDKs (OpenAI, Cohere, Gemini). Both build their :attr:`client` lazily and name a
non-default server in the cache namespace the same way. :func:`indexed_vectors` reads the
OpenAI-shaped ``data: [{index, embedding}]`` responses that several providers copy.
"""

from __future__ import annotations

import base64
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    JsonHttpClient,
    RetryPolicy,
    status_error,
    transport_error,
    with_retries,
)
from ._limits import RateLimiter
from ._parallel import run_jobs

R = TypeVar("R")


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
    implement :meth:`make_client` and :meth:`embed_chunk`, sending each request
    through :meth:`retrying` (or a :class:`JsonHttpClient` built with :attr:`limiter`).
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
    def embed_chunk(self, texts: list[str], role: Role) -> tuple[np.ndarray, int | None]:
        """Embed one batch in one request (retried); return validated vectors and reported tokens."""

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        return self.embed_batches_concurrently(texts, role, 1)

    def embed_batches_concurrently(
        self, texts: Sequence[str], role: Role, concurrency: int
    ) -> Iterator[EmbeddedBatch]:
        if self.rejects_empty:
            empty = [i for i, t in enumerate(texts) if not t]
            if empty:
                raise InvalidInputError(
                    f"{self.provider} rejects empty strings; input[{empty[0]}] is empty"
                )
        limit = self._scrubbed(self.batch_limit)
        jobs = [
            partial(self._embed_batch, start, list(chunk), role)
            for start, chunk in batches(texts, limit, self.max_batch_tokens)
        ]
        return run_jobs(jobs, concurrency)

    def _embed_batch(self, start: int, texts: list[str], role: Role) -> EmbeddedBatch:
        began = time.perf_counter()
        vectors, tokens = self._scrubbed(partial(self.embed_chunk, texts, role))
        self.limiter.settle(self.estimated_tokens(texts), tokens)
        return EmbeddedBatch(start, vectors, tokens, time.perf_counter() - began)

    @staticmethod
    def estimated_tokens(texts: Sequence[str]) -> int:
        """What a request of ``texts`` is counted as against ``tokens_per_minute`` before it is sent."""
        return estimate_total_tokens(texts)

    @property
    def client(self) -> Any:
        """The transport (an SDK client, a :class:`JsonHttpClient`), built on first use."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    @abstractmethod
    def make_client(self) -> Any:
        """Build :attr:`client` (importing the provider's SDK only now)."""

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
        except ProviderError as exc:
            secrets = self.secrets()
            clean = exc.redacted(lambda text: redact_text(text, secrets))
        except CachedEmbedError:
            raise  # ours, about the call itself: quotes no server text
        except Exception as exc:
            # An SDK's own error (a pydantic ValidationError quoting a response value...).
            text = redact_text(f"{type(exc).__name__}: {exc}", self.secrets())
            clean = ProviderError(self.provider, text)
        raise clean  # outside the except block: the unredacted original is not its context

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
    """A provider spoken to as JSON over HTTP with ``requests``: one POST per batch.

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
        return JsonHttpClient(
            self.provider,
            self.base_url,
            self.auth_headers(),
            timeout=self.timeout,
            retry=self.retry,
            limiter=self.limiter,
        )

    def post_batch(self, path: str, texts: list[str], role: Role) -> tuple[Any, Mapping[str, str]]:
        """POST one batch: retried, paced by :attr:`limiter`, credentials scrubbed from errors."""
        return self.client.post(
            path, self.request_body(texts, role), tokens=self.estimated_tokens(texts)
        )

    def embed_chunk(self, texts: list[str], role: Role) -> tuple[np.ndarray, int | None]:
        body = self.request_body(texts, role)
        return self.post_body(body, len(texts), self.estimated_tokens(texts))

    def post_body(
        self, body: Mapping[str, Any], expected: int, tokens: int = 0
    ) -> tuple[np.ndarray, int | None]:
        """Send one request ``body`` for ``expected`` inputs (``tokens`` estimated, for the
        rate limiter); return its vectors and tokens. Retried, paced by :attr:`limiter`,
        credentials scrubbed from errors."""
        payload, headers = self.client.post(self.path, body, tokens=tokens)
        if not isinstance(payload, dict):
            raise ProviderResponseError(
                self.provider, f"expected a JSON object, got {type(payload).__name__}"
            )
        return self.parse_response(payload, headers, expected)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return self.identity_with(self.identity_params(role), api_base=self.server_identity())


class SdkEmbeddingFunction(RemoteEmbeddingFunction):
    """A provider spoken to through its official SDK (OpenAI, Cohere, Gemini).

    Subclasses implement :meth:`make_client` with the SDK's own retries off (ours retry
    instead, so the two never multiply) and send each call through :meth:`sdk_call`,
    which turns the SDK's errors into :class:`ProviderError` via :meth:`sdk_error`.
    """

    def sdk_call(self, call: Callable[[], R]) -> R:
        """Run one SDK call; its errors come out as :class:`ProviderError` (retryable or not)."""
        try:
            return call()
        except Exception as exc:
            mapped = self.sdk_error(exc)
            if mapped is None:
                raise
        raise mapped  # outside the except block: the SDK's error is not its context

    def sdk_error(self, exc: Exception) -> ProviderError | None:
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
