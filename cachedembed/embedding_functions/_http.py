"""Retries and HTTP plumbing shared by every remote provider.

One retry policy for all providers: exponential backoff with full jitter on 408, 409,
429, 5xx, timeouts and dropped connections, honouring ``Retry-After`` (seconds or an
HTTP date) and ``retry-after-ms``, bounded both in attempts and in total time. SDKs'
own retries are switched off where we use an SDK, so the two never multiply.

:class:`JsonHttpClient` is the ``requests``-based transport for providers without an
official SDK (Gemini REST, Jina, Voyage, Ollama, TEI, Hugging Face). Error text never
contains request headers, so API keys cannot leak into exceptions or logs.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ProviderError
from ..redact import is_credential_header, redact_text, redact_url, url_secrets

if TYPE_CHECKING:
    from ._limits import RateLimiter

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
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        permit = limiter.acquire(tokens) if limiter is not None else None
        try:
            result = call()
        except ProviderError as exc:
            if permit is not None:
                if exc.status == 429:
                    permit.throttled(exc.retry_after)
                else:
                    permit.failed()
            if not exc.retryable:
                raise
            wait = policy.delay(attempt, exc.retry_after)
            elapsed = time.monotonic() - started
            if attempt >= policy.max_attempts or elapsed + wait > policy.max_elapsed:
                raise ProviderError(
                    provider,
                    f"{exc.message} (gave up after {attempt} attempts in {elapsed:.1f}s)",
                    status=exc.status,
                    retry_after=exc.retry_after,
                ) from None
            log.debug(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                provider,
                attempt,
                exc.message,
                wait,
            )
            time.sleep(wait)
            continue
        except BaseException:
            if permit is not None:
                permit.failed()
            raise
        if permit is not None:
            permit.succeeded(headers_of(result) if headers_of is not None else None)
        return result


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


class JsonHttpClient:
    """POST/GET JSON with retries, mapping failures to :class:`ProviderError`."""

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
        import requests

        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self.limiter = limiter
        self._session = requests.Session()
        self._session.headers.update(headers or {})
        # Credentials sent in headers or the URL, so an error body that echoes one can be scrubbed.
        self._secrets = [
            value.split(" ", 1)[-1]
            for name, value in (headers or {}).items()
            if value and is_credential_header(name)
        ] + url_secrets(self.base_url)

    def request(
        self, method: str, path: str, body: Any = None, *, tokens: int = 0
    ) -> tuple[Any, Mapping[str, str]]:
        """Send one request (retried as the policy allows, paced by the limiter with
        ``tokens`` estimated tokens); return the decoded JSON and headers."""
        return with_retries(
            self.provider,
            lambda: self._once(method, path, body),
            self.retry,
            limiter=self.limiter,
            tokens=tokens,
            headers_of=_headers_of,
        )

    def post(self, path: str, body: Any, *, tokens: int = 0) -> tuple[Any, Mapping[str, str]]:
        return self.request("POST", path, body, tokens=tokens)

    def get(self, path: str) -> tuple[Any, Mapping[str, str]]:
        return self.request("GET", path)

    def _once(self, method: str, path: str, body: Any) -> tuple[Any, Mapping[str, str]]:
        import requests

        url = join_url(self.base_url, path)
        shown = redact_url(url)
        try:
            response = self._session.request(method, url, json=body, timeout=self.timeout)
        except requests.Timeout:
            raise ProviderError(
                self.provider, f"request to {shown} timed out after {self.timeout}s", retryable=True
            ) from None
        except requests.ConnectionError as exc:
            reason = type(getattr(exc, "__context__", None) or exc).__name__
            raise ProviderError(
                self.provider, f"connection to {shown} failed ({reason})", retryable=True
            ) from None
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
                response.reason,
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


def _headers_of(response: tuple[Any, Mapping[str, str]]) -> Mapping[str, str]:
    return response[1]


def join_url(base: str, path: str) -> str:
    """``path`` appended to ``base``'s path, keeping ``base``'s query (which may carry a key)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))
