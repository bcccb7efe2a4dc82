"""HTTP errors of the server, in OpenAI's body shape (``/v1/...``) or TEI's (``/embed``).

Every failure a handler meets becomes one :class:`APIError`: its status code and its
message are decided here, once, so that both API shapes report the same problem the same
way, and so that nothing from an upstream provider's credentials ever reaches a client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import (
    ConfigurationError,
    InvalidInputError,
    ProviderError,
    ProviderResponseError,
    StoreError,
)


@dataclass
class APIError(Exception):
    """An error response: HTTP ``status``, OpenAI ``type``/``code``/``param``, extra headers."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def openai_body(self) -> dict[str, object]:
        """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API answers."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def tei_body(self) -> dict[str, object]:
        """``{"error", "error_type"}`` as Text Embeddings Inference answers."""
        kind = _TEI_TYPES.get(self.status, "Backend" if self.status >= 500 else "Validation")
        return {"error": self.message, "error_type": kind}


# TEI's error_type values, by the status the server answers with.
_TEI_TYPES = {401: "Unauthorized", 404: "NotFound", 405: "NotFound", 429: "Overloaded"}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a request the server will not send upstream."""
    return APIError(400, message, param=param, code=code)


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, param=param, code="request_too_large")


def unauthorized() -> APIError:
    return APIError(
        401,
        "missing or incorrect API key: send 'Authorization: Bearer <key>' with the key "
        "the server was started with",
        code="invalid_api_key",
    )


def model_not_found(model: str, known: list[str]) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist on this server; it serves: {', '.join(known)}",
        param="model",
        code="model_not_found",
    )


def from_exception(exc: Exception) -> APIError:
    """The response for an error raised while embedding (input, provider or configuration)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InvalidInputError):
        return invalid(str(exc), param="input")
    if isinstance(exc, ProviderResponseError):
        return APIError(502, f"upstream {exc}", type="server_error", code="upstream_bad_response")
    if isinstance(exc, ProviderError):
        return _from_provider(exc)
    if isinstance(exc, ConfigurationError):
        return APIError(500, f"server misconfigured: {exc}", type="server_error")
    if isinstance(exc, StoreError):
        # Embedding fails open; only what needs the cache itself (/stats) gets here.
        return APIError(
            503, f"the cache is unavailable: {exc}", type="server_error", code="cache_unavailable"
        )
    return APIError(500, "internal error; the server log has the details", type="server_error")


def _from_provider(exc: ProviderError) -> APIError:
    status = exc.status
    if status == 429:
        headers = {}
        if exc.retry_after is not None:
            wait = max(0.0, exc.retry_after)
            # Retry-After takes whole seconds; OpenAI's SDKs also read the exact retry-after-ms.
            headers["Retry-After"] = str(math.ceil(wait))
            headers["retry-after-ms"] = str(round(wait * 1000))
        return APIError(
            429,
            f"upstream {exc.provider} is rate limiting: {exc.message}",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status in (401, 403):
        # The upstream message may quote part of the server's provider key: never relay it.
        return APIError(
            502,
            f"upstream {exc.provider} rejected the server's credentials (HTTP {status}); "
            "the server operator must fix the provider key",
            type="server_error",
            code="upstream_auth_error",
        )
    timed_out = status in (408, 504) or (status is None and "timed out" in exc.message)
    if timed_out:
        return APIError(504, f"upstream {exc}", type="server_error", code="upstream_timeout")
    if status is not None and 400 <= status < 500:
        # The provider refused these texts (too long, empty, ...): the client's to fix.
        return invalid(f"upstream {exc}", param="input", code="upstream_rejected_input")
    return APIError(502, f"upstream {exc}", type="server_error", code="upstream_error")
