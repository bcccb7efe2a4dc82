"""Retries and HTTP plumbing shared by every remote provider.

One retry policy for all providers: exponential backoff with full jitter on 408, 409,
429, 5xx, timeouts and dropped connections, honouring ``Retry-After`` (seconds or an
HTTP date) and ``retry-after-ms``, bounded both in attempts and in total time. SDKs'
own retries are switched off where we use an SDK, so the two never multiply.

:class:`JsonHttpClient` (blocking) and :class:`AsyncJsonHttpClient` (asyncio) are the
``httpx`` transports for providers without an official SDK (Jina, Voyage, Ollama, TEI,
Hugging Face), sharing how a response is decoded and a failure reported. Error text never
contains request headers, so API keys cannot leak into exceptions or logs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ProviderError
from ..redact import is_credential_header, redact_text, redact_url, url_secrets

if TYPE_CHECKING:
    from ._limits import Permit, RateLimiter

log = logging.getLogger("cachedembed.providers")

R = TypeVar("R")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a failed provider request."""

    max_attempts: int = 6
    """Total tries, the first included."""
    max_elapsed: float = 120.0
    """Give up once this many seconds have passed since the first try."""
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 1)."""
        if retry_after is not None:
            # The server's word wins; `max_elapsed` still bounds the whole wait.
            return max(retry_after, 0.0)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


DEFAULT_RETRY = RetryPolicy()


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


class _Tries:
    """One request's attempts: what the limiter is told, and whether (and when) to try again."""

    def __init__(
        self,
        provider: str,
        policy: RetryPolicy,
        headers_of: Callable[[Any], Mapping[str, str] | None] | None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.headers_of = headers_of
        self.started = time.monotonic()
        self.attempt = 0

    def failed(self, permit: Permit | None, exc: ProviderError) -> float:
        """Seconds to wait before the next try after ``exc``; raises when there is none."""
        if permit is not None:
            if exc.status == 429:
                permit.throttled(exc.retry_after)
            else:
                permit.failed()
        if not exc.retryable:
            raise exc
        wait = self.policy.delay(self.attempt, exc.retry_after)
        elapsed = time.monotonic() - self.started
        if self.attempt >= self.policy.max_attempts or elapsed + wait > self.policy.max_elapsed:
            raise ProviderError(
                self.provider,
                f"{exc.message} (gave up after {self.attempt} attempts in {elapsed:.1f}s)",
                status=exc.status,
                retry_after=exc.retry_after,
            ) from None
        log.debug(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            self.provider,
            self.attempt,
            exc.message,
            wait,
        )
        return wait

    def succeeded(self, permit: Permit | None, result: R) -> R:
        if permit is not None:
            permit.succeeded(self.headers_of(result) if self.headers_of is not None else None)
        return result


def with_retries(
    provider: str,
    call: Callable[[], R],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    limiter: RateLimiter | None = None,
    tokens: int = 0,
    headers_of: Callable[[R], Mapping[str, str] | None] | None = None,
) -> R:
    """Run ``call`` until it succeeds, raises a non-retryable error, or the policy runs out.

    ``call`` signals a retryable failure by raising :class:`ProviderError` with
    ``retryable=True`` (and ``retry_after`` when the server said how long to wait).
    With a ``limiter``, every attempt (retries too) first waits for its admission with
    ``tokens`` estimated tokens, and reports back how it ended: a 429 slows every user of
    the limiter, and the response headers (``headers_of(result)``) pace the next requests.
    """
    tries = _Tries(provider, policy, headers_of)
    while True:
        tries.attempt += 1
        permit = limiter.acquire(tokens) if limiter is not None else None
        try:
            result = call()
        except ProviderError as exc:
            time.sleep(tries.failed(permit, exc))
            continue
        except BaseException:
            if permit is not None:
                permit.failed()
            raise
        return tries.succeeded(permit, result)


async def awith_retries(
    provider: str,
    call: Callable[[], Awaitable[R]],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    limiter: RateLimiter | None = None,
    tokens: int = 0,
    headers_of: Callable[[R], Mapping[str, str] | None] | None = None,
) -> R:
    """:func:`with_retries` for a coroutine: the same policy and limiter, waits that do not
    block the event loop. Cancelling it cancels the attempt in flight."""
    tries = _Tries(provider, policy, headers_of)
    while True:
        tries.attempt += 1
        permit = await limiter.aacquire(tokens) if limiter is not None else None
        try:
            result = await call()
        except ProviderError as exc:
            await asyncio.sleep(tries.failed(permit, exc))
            continue
        except BaseException:
            if permit is not None:
                permit.failed()
            raise
        return tries.succeeded(permit, result)


def error_message(body: Any, fallback: str) -> str:
    """The human message inside the error bodies providers send (OpenAI, Cohere, Gemini, TEI, Voyage)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("status") or err)
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def status_error(
    provider: str,
    status: int,
    payload: Any,
    headers: Mapping[str, str] | None,
    fallback: str | None = None,
    redact: Callable[[str], str] = str,
) -> ProviderError:
    """The :class:`ProviderError` for an HTTP error response (plain HTTP or an SDK's status error).

    Carries the server's message, whether to retry, and how long to wait: ``Retry-After``
    headers, else a body's ``estimated_time`` (Hugging Face's "model is loading" 503).
    """
    retry_after = parse_retry_after(headers)
    if retry_after is None and isinstance(payload, dict):
        estimated = payload.get("estimated_time")
        if isinstance(estimated, (int, float)) and not isinstance(estimated, bool):
            retry_after = float(estimated)
    return ProviderError(
        provider,
        redact(error_message(payload, fallback or "error")),
        status=status,
        retry_after=retry_after,
        retryable=status in RETRYABLE_STATUS,
    )


def transport_error(
    provider: str, exc: BaseException, timeout: float | None
) -> ProviderError | None:
    """A retryable :class:`ProviderError` for an ``httpx``/``httpx2`` transport failure, else ``None``.

    SDKs raise these (cohere uses httpx, google-genai httpx2); matching by class name
    avoids importing either transport just to classify an error.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "TimeoutException" in names:
        return ProviderError(provider, f"request timed out after {timeout}s", retryable=True)
    if "TransportError" in names:
        return ProviderError(provider, f"connection failed ({type(exc).__name__})", retryable=True)
    return None


class _JsonTransport:
    """What the blocking and the asyncio JSON clients share: URLs, failures, decoding, redaction."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self.limiter = limiter
        self.headers = dict(headers or {})
        # Credentials sent in headers or the URL, so an error body that echoes one can be scrubbed.
        self._secrets = [
            value.split(" ", 1)[-1]
            for name, value in self.headers.items()
            if value and is_credential_header(name)
        ] + url_secrets(self.base_url)

    def _url(self, path: str) -> str:
        return join_url(self.base_url, path)

    def _transport_error(self, exc: Exception, url: str) -> ProviderError:
        """The retryable error for a request that got no answer (``exc`` is httpx's)."""
        import httpx

        shown = redact_url(url)
        if isinstance(exc, httpx.TimeoutException):
            return ProviderError(
                self.provider, f"request to {shown} timed out after {self.timeout}s", retryable=True
            )
        reason = type(exc.__context__ or exc).__name__
        return ProviderError(
            self.provider, f"connection to {shown} failed ({reason})", retryable=True
        )

    def _decoded(self, response: Any) -> tuple[Any, Mapping[str, str]]:
        """The JSON body and headers of an httpx response; an error status raises."""
        try:
            payload = response.json() if response.content else None
        except (ValueError, json.JSONDecodeError):
            payload = response.text
        if response.status_code >= 400:
            raise status_error(
                self.provider,
                response.status_code,
                payload,
                response.headers,
                response.reason_phrase,
                self._redact,
            )
        if isinstance(payload, str):
            raise ProviderError(
                self.provider,
                f"expected a JSON response, got {self._redact(payload[:200])!r}",
                status=response.status_code,
            )
        return payload, response.headers

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)


class JsonHttpClient(_JsonTransport):
    """POST/GET JSON over one pooled ``httpx.Client``, mapping failures to :class:`ProviderError`.

    Thread-safe: the concurrent batches of a call share its connections.
    """

    def __init__(self, provider: str, base_url: str, *args: Any, **kwargs: Any) -> None:
        import httpx

        super().__init__(provider, base_url, *args, **kwargs)
        self._http = httpx.Client(headers=self.headers, timeout=self.timeout)

    def request(
        self, method: str, path: str, body: Any = None, *, tokens: int = 0
    ) -> tuple[Any, Mapping[str, str]]:
        """Send one request (retried as the policy allows, paced by the limiter with
        ``tokens`` estimated tokens); return the decoded JSON and headers."""
        return with_retries(
            self.provider,
            lambda: self.once(method, path, body),
            self.retry,
            limiter=self.limiter,
            tokens=tokens,
            headers_of=_headers_of,
        )

    def post(self, path: str, body: Any, *, tokens: int = 0) -> tuple[Any, Mapping[str, str]]:
        return self.request("POST", path, body, tokens=tokens)

    def get(self, path: str) -> tuple[Any, Mapping[str, str]]:
        return self.request("GET", path)

    def once(self, method: str, path: str, body: Any = None) -> tuple[Any, Mapping[str, str]]:
        """One attempt, no retry: the decoded JSON and headers, or a :class:`ProviderError`."""
        import httpx

        url = self._url(path)
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, url) from None
        return self._decoded(response)

    def close(self) -> None:
        self._http.close()


class AsyncJsonHttpClient(_JsonTransport):
    """:class:`JsonHttpClient` for coroutines: one ``httpx.AsyncClient``, bound to the event
    loop that built it (a provider keeps one per loop)."""

    def __init__(self, provider: str, base_url: str, *args: Any, **kwargs: Any) -> None:
        import httpx

        super().__init__(provider, base_url, *args, **kwargs)
        self._http = httpx.AsyncClient(headers=self.headers, timeout=self.timeout)

    async def once(self, method: str, path: str, body: Any = None) -> tuple[Any, Mapping[str, str]]:
        """One attempt, no retry: the decoded JSON and headers, or a :class:`ProviderError`."""
        import httpx

        url = self._url(path)
        try:
            response = await self._http.request(method, url, json=body)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, url) from None
        return self._decoded(response)

    async def aclose(self) -> None:
        await self._http.aclose()


def _headers_of(response: tuple[Any, Mapping[str, str]]) -> Mapping[str, str]:
    return response[1]


def join_url(base: str, path: str) -> str:
    """``path`` appended to ``base``'s path, keeping ``base``'s query (which may carry a key)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))
