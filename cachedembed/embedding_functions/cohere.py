"""Cohere embed through the official ``cohere`` SDK (v2 API by default, v1 on request).

Same constructor as Chroma's ``CohereEmbeddingFunction`` plus the options Cohere's embed
endpoint takes. Unlike Chroma, queries are sent with ``input_type="search_query"`` and
documents with ``"search_document"``: Cohere's v3+ models embed the two differently, and
searching with document-type query vectors loses recall.

The client is built with an explicit ``base_url`` (the SDK reads ``$CO_API_URL`` only at
import time) and its own retries off (``max_retries=0``): :func:`with_retries` retries
instead, so the two never multiply. The v2 API (``ClientV2``, ``/v2/embed``) is the
default; ``api_version="v1"`` uses ``/v1/embed`` for gateways that only speak v1, and
both v1 response shapes (``embeddings_floats`` and ``embeddings_by_type``) are read.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigurationError, ProviderError, ProviderResponseError
from ..keys import Role
from ._base import as_matrix, check_positive

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import Exchange, RemoteOptions, Request, SdkEmbeddingFunction, without_none

DEFAULT_BASE_URL = "https://api.cohere.com"
DEFAULT_MODEL = "embed-english-v3.0"
_ROLE_INPUT_TYPE: dict[Role, str] = {"document": "search_document", "query": "search_query"}
_TRUNCATE = ("NONE", "START", "END")


class CohereEmbeddingFunction(SdkEmbeddingFunction):
    """Cohere ``embed`` (``embed-english-v3.0``, ``embed-multilingual-v3.0``, ``embed-v4.0``, ...).

    Args:
        api_key: The key; better read from ``$CO_API_KEY`` / ``$COHERE_API_KEY``
            (or the variable named by ``api_key_env_var``).
        model_name: Chroma's default ``"large"`` names a retired model, so the default is
            ``embed-english-v3.0``.
        input_type: ``None`` (default): ``search_document`` for documents and
            ``search_query`` for queries. Another value (``classification``,
            ``clustering``) is sent for both.
        truncate: ``NONE``, ``START`` or ``END`` (Cohere's default ``END`` when unset).
        output_dimension: Matryoshka size for ``embed-v4.0`` (256, 512, 1024, 1536).
        api_base: Another server (default ``$CO_API_URL`` or ``https://api.cohere.com``).
        api_version: ``"v2"`` (default) or ``"v1"``.
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).

    Model, input type, truncation, output dimension and a non-default server are the
    cache namespace; the key and the API version are not.
    """

    provider = "cohere"
    default_base_url = DEFAULT_BASE_URL
    max_batch = 96
    timeout = 60.0
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    model_name: str
    api_key_env_var: str
    input_type: str | None
    truncate: str | None
    output_dimension: int | None
    api_version: str

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = DEFAULT_MODEL,
        api_key_env_var: str = "CO_API_KEY",
        input_type: str | None = None,
        truncate: str | None = None,
        output_dimension: int | None = None,
        api_base: str | None = None,
        api_version: str = "v2",
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        self.keep_options(locals())
        if truncate is not None and truncate not in _TRUNCATE:
            raise ConfigurationError(
                f"cohere: truncate must be one of {', '.join(_TRUNCATE)}, got {truncate!r}"
            )
        if api_version not in ("v1", "v2"):
            raise ConfigurationError(
                f"cohere: api_version must be 'v1' or 'v2', got {api_version!r}"
            )
        check_positive(self.provider, "output_dimension", output_dimension)
        if output_dimension is not None and api_version == "v1":
            raise ConfigurationError(
                "cohere: output_dimension needs api_version='v2' (the v1 API has no such field)"
            )
        self.resolve_key(
            api_key, [api_key_env_var, "CO_API_KEY", "COHERE_API_KEY", "CHROMA_COHERE_API_KEY"]
        )

    @property
    def base_url(self) -> str:
        return (self.api_base or os.environ.get("CO_API_URL") or DEFAULT_BASE_URL).rstrip("/")

    @classmethod
    def spec_help(cls) -> str:
        return "cohere:MODEL_NAME  (e.g. embed-english-v3.0; key $CO_API_KEY, server $CO_API_URL)"

    def make_client(self) -> Any:
        import cohere

        kind = cohere.ClientV2 if self.api_version == "v2" else cohere.Client
        return kind(api_key=self.require_key(), base_url=self.base_url, timeout=self.timeout)

    def make_async_client(self) -> Any:
        import cohere

        kind = cohere.AsyncClientV2 if self.api_version == "v2" else cohere.AsyncClient
        return kind(api_key=self.require_key(), base_url=self.base_url, timeout=self.timeout)

    def request_fields(self, role: Role) -> dict[str, Any]:
        """The embed call's keyword arguments except ``texts``; unset ones left out."""
        fields: dict[str, Any] = {
            "model": self.model_name,
            "input_type": self.input_type or _ROLE_INPUT_TYPE[role],
            "truncate": self.truncate,
            "output_dimension": self.output_dimension,
        }
        if self.api_version == "v2":
            fields["embedding_types"] = ["float"]  # v2 requires it; v1 defaults to floats
        else:
            fields["batching"] = False  # the v1 client would split and thread; we batch ourselves
        return without_none(fields)

    def exchange(self, texts: list[str], role: Role) -> Exchange:
        fields = self.request_fields(role)
        response = yield Request(
            lambda client: client.embed(texts=texts, request_options={"max_retries": 0}, **fields),
            texts,
        )
        return self.parse(response, len(texts))

    def client_error(self, exc: Exception) -> ProviderError | None:
        from cohere.core.api_error import ApiError

        if isinstance(exc, ApiError):
            return self.status_error(int(exc.status_code or 0), exc.body, exc.headers)
        return super().client_error(exc)

    def parse(self, response: Any, expected: int) -> tuple[np.ndarray, int | None]:
        """Float vectors and billed input tokens from a v2 or either v1 response shape.

        No per-item index: Cohere returns vectors in input order.
        """
        embeddings = getattr(response, "embeddings", None)
        # v1 "embeddings_floats" is a list; v2 and v1 "embeddings_by_type" hold lists by type.
        rows: Any = (
            embeddings if isinstance(embeddings, list) else getattr(embeddings, "float_", None)
        )
        if rows is None:
            raise ProviderResponseError(self.provider, "response has no float embeddings")
        vectors = as_matrix(self.provider, rows, expected, self.output_dimension)
        units = getattr(getattr(response, "meta", None), "billed_units", None)
        tokens = getattr(units, "input_tokens", None)
        # The SDK types billed units as floats; they are whole tokens.
        if (
            isinstance(tokens, (int, float))
            and not isinstance(tokens, bool)
            and tokens >= 0
            and float(tokens).is_integer()
        ):
            return vectors, int(tokens)
        return vectors, None

    def cache_identity(self, role: Role) -> dict[str, Any]:
        fields = self.request_fields(role)
        fields.pop("embedding_types", None)
        fields.pop("batching", None)
        return self.identity_with(fields, api_base=self.server_identity())
