"""OpenAI embeddings (and Azure OpenAI, and any OpenAI-compatible server) through the official SDK.

Same constructor as Chroma's ``OpenAIEmbeddingFunction``. Requests go out in batches of at
most 2048 inputs and about 300,000 tokens; should the token estimate still be too low for
a batch, the API's ``max_tokens_per_request`` error splits it in two and both halves are
sent. The SDK's own retries are off: :func:`~cachedembed.embedding_functions._http.with_retries`
retries instead (honouring ``retry-after-ms`` / ``Retry-After``), so the two never multiply.
Vectors are requested as base64 and decoded straight into float32, bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigurationError, ProviderError
from ..keys import Role
from ..redact import is_credential_header, url_identity
from ._http import RETRYABLE_STATUS, error_message, parse_retry_after

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import Exchange, RemoteOptions, Request, SdkEmbeddingFunction, indexed_vectors

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _TooManyTokens(ProviderError):
    """The request's inputs summed to more tokens than one request may carry."""


class OpenAIEmbeddingFunction(SdkEmbeddingFunction):
    """OpenAI ``/v1/embeddings``; Azure OpenAI with ``api_type="azure"``; compatible servers via ``api_base``.

    Args:
        api_key: The key; better left out and read from ``$OPENAI_API_KEY`` (or the
            variable named by ``api_key_env_var``), so it is never persisted.
        model_name: ``text-embedding-3-small``, ``text-embedding-3-large``, ... (Chroma's default,
            ``text-embedding-ada-002``, is kept for compatibility).
        organization_id: Sent as the ``OpenAI-Organization`` header.
        api_base: Another server (``$OPENAI_BASE_URL`` when not given); for Azure, the
            resource endpoint ``https://NAME.openai.azure.com``.
        api_type: ``"azure"`` for Azure OpenAI (needs ``api_version`` and ``deployment_id``).
        api_version: Azure API version (default ``$OPENAI_API_VERSION``).
        deployment_id: Azure deployment name.
        default_headers: Extra headers for every request (credential-like ones are not
            returned by :meth:`get_config`).
        dimensions: Shorter vectors (``text-embedding-3`` and later); part of the cache namespace.
        api_key_env_var: Environment variable holding the key.
        retry: Retry policy (default: 6 attempts within 120 s).
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).

    The cache namespace holds the model, ``dimensions``, and the server when it is not
    api.openai.com (a compatible server may serve another model under the same name);
    for Azure, the endpoint and deployment.
    """

    provider = "openai"
    default_base_url = DEFAULT_BASE_URL
    max_batch = 2048
    max_batch_tokens = 300_000
    rejects_empty = True
    timeout = 120.0
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    model_name: str
    organization_id: str | None
    api_type: str | None
    api_version: str | None
    deployment_id: str | None
    default_headers: dict[str, str] | None
    dimensions: int | None
    api_key_env_var: str

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = "text-embedding-ada-002",
        organization_id: str | None = None,
        api_base: str | None = None,
        api_type: str | None = None,
        api_version: str | None = None,
        deployment_id: str | None = None,
        default_headers: dict[str, str] | None = None,
        dimensions: int | None = None,
        api_key_env_var: str = "OPENAI_API_KEY",
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        self.keep_options(locals())
        if api_type not in (None, "openai", "azure"):
            raise ConfigurationError(f"openai: api_type must be 'azure' or None, got {api_type!r}")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise ConfigurationError(
                f"openai: dimensions must be a positive integer, got {dimensions!r}"
            )
        if self.azure:
            self.api_version = api_version or os.environ.get("OPENAI_API_VERSION")
            missing = [
                n
                for n, v in (
                    ("api_version", self.api_version),
                    ("deployment_id", deployment_id),
                    ("api_base", self.base_url),
                )
                if not v
            ]
            if missing:
                raise ConfigurationError(f"openai: Azure OpenAI needs {', '.join(missing)}")
            self.resolve_key(api_key, [api_key_env_var, "AZURE_OPENAI_API_KEY"])
        else:
            self.resolve_key(api_key, [api_key_env_var, "CHROMA_OPENAI_API_KEY"])

    @property
    def azure(self) -> bool:
        return self.api_type == "azure"

    @property
    def base_url(self) -> str | None:
        """The server: ``api_base``, else ``$OPENAI_BASE_URL`` (``$AZURE_OPENAI_ENDPOINT`` for Azure)."""
        if self.azure:
            url = self.api_base or os.environ.get("AZURE_OPENAI_ENDPOINT")
            return url.rstrip("/") if url else None
        return (self.api_base or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    @property
    def sends_dimensions(self) -> bool:
        # ada-002 rejects the parameter; Chroma drops it there too.
        return self.dimensions is not None and "ada-002" not in self.model_name

    @classmethod
    def spec_help(cls) -> str:
        return "openai:MODEL_NAME  (e.g. text-embedding-3-small; key $OPENAI_API_KEY, server $OPENAI_BASE_URL)"

    def make_client(self) -> Any:
        import openai

        return self._build_client(openai.AzureOpenAI, openai.OpenAI)

    def make_async_client(self) -> Any:
        import openai

        return self._build_client(openai.AsyncAzureOpenAI, openai.AsyncOpenAI)

    def _build_client(self, azure: Callable[..., Any], plain: Callable[..., Any]) -> Any:
        common: dict[str, Any] = {
            "api_key": self.require_key(),
            "organization": self.organization_id,
            "default_headers": self.default_headers,
            "max_retries": 0,  # ours retry instead: see the module docstring
            "timeout": self.timeout,
        }
        if self.azure:
            return azure(
                azure_endpoint=str(self.base_url),
                azure_deployment=self.deployment_id,
                api_version=self.api_version,
                **common,
            )
        return plain(base_url=self.base_url, **common)

    def exchange(self, texts: list[str], role: Role) -> Exchange:
        try:
            # The raw response: its x-ratelimit-* headers pace the limiter.
            raw = yield Request(
                lambda client: client.embeddings.with_raw_response.create(**self._fields(texts)),
                texts,
                _headers,
            )
        except _TooManyTokens:
            if len(texts) == 1:
                raise
            # The byte-based estimate undercounted this batch: send it in two halves.
            half = len(texts) // 2
            left, left_tokens = yield from self.exchange(texts[:half], role)
            right, right_tokens = yield from self.exchange(texts[half:], role)
            tokens = (
                None if left_tokens is None or right_tokens is None else left_tokens + right_tokens
            )
            return np.concatenate([left, right]), tokens
        response = raw.parse()
        vectors = indexed_vectors(self.provider, response.data, len(texts))
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "prompt_tokens", None)
        return vectors, tokens if isinstance(tokens, int) else None

    def _fields(self, texts: list[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": self.model_name,
            "input": texts,
            "encoding_format": "base64",
        }
        if self.sends_dimensions:
            fields["dimensions"] = self.dimensions
        return fields

    def client_error(self, exc: Exception) -> ProviderError | None:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(
                self.provider, f"request timed out after {self.timeout}s", retryable=True
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(
                self.provider, f"connection failed ({_cause(exc)})", retryable=True
            )
        if isinstance(exc, openai.APIStatusError):
            return _status_error(self.provider, exc)
        return None

    def batch_adapter(self, role: Role = "document") -> Any:
        """OpenAI's Batch API (half price, within 24 h) for :meth:`cachedembed.Cached.submit_batch`
        (the same requests for either role)."""
        if self.azure:
            raise ConfigurationError(
                "openai: the batch API is supported for OpenAI and compatible servers, not Azure deployments"
            )
        from .openai_batch import OpenAIBatchAdapter

        return OpenAIBatchAdapter(self)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        dims = self.dimensions if self.sends_dimensions else None
        if self.azure:
            return self.identity_with(
                {
                    "api": "azure",
                    "endpoint": url_identity(str(self.base_url)),
                    "deployment": self.deployment_id,
                    "model": self.model_name,
                },
                dimensions=dims,
            )
        return self.identity_with(
            {"model": self.model_name, "dimensions": dims}, api_base=self.server_identity()
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.default_headers:  # credential-like headers are passed again, like the key
            config["default_headers"] = {
                k: v for k, v in self.default_headers.items() if not is_credential_header(k)
            }
        return config


def _status_error(provider: str, exc: Any) -> ProviderError:
    """Map the SDK's ``APIStatusError`` to ours, keeping status, message and wait hint."""
    status = int(exc.status_code)
    body = exc.body
    message = error_message({"error": body} if isinstance(body, dict) else body, str(exc.message))
    retry_after = parse_retry_after(exc.response.headers)
    code = body.get("code") or body.get("type") if isinstance(body, dict) else None
    cls: Callable[..., ProviderError] = (
        _TooManyTokens if code == "max_tokens_per_request" else ProviderError
    )
    return cls(
        provider,
        message,
        status=status,
        retry_after=retry_after,
        retryable=status in RETRYABLE_STATUS,
    )


def _headers(raw: Any) -> Any:
    return raw.headers


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause else type(exc).__name__
