"""Google Gemini embeddings through the official ``google-genai`` SDK.

Both of Chroma's class names are here with their constructor arguments:
``GoogleGeminiEmbeddingFunction`` (google-genai, optional Vertex AI) and
``GoogleGenerativeAiEmbeddingFunction`` (the name Chroma kept from the superseded
google-generativeai SDK); they share one implementation.

Why the SDK rather than plain HTTP: ``genai.Client(http_options=HttpOptions(base_url=...,
api_version="v1beta"))`` points it cleanly at any server (a loopback test server speaking
``POST /v1beta/models/{model}:batchEmbedContents``), ``embed_content`` with a list of
texts sends exactly one ``batchEmbedContents`` request, its retries can be switched off
(``HttpRetryOptions(attempts=1)``) so :func:`with_retries` alone retries, and Vertex AI
(``vertexai=True``, ``project``, ``location``) comes with it. The SDK does not split
batches, so texts go out at most 100 per request (the API's limit). Gemini reports no
token usage: tokens are recorded as estimates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ConfigurationError, ProviderResponseError
from ..keys import Role
from ..redact import url_identity
from ._base import as_matrix, check_positive
from ._http import status_error, transport_error

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import RemoteEmbeddingFunction, RemoteOptions

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-embedding-001"
_ROLE_TASK: dict[Role, str] = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}


class GoogleGeminiEmbeddingFunction(RemoteEmbeddingFunction):
    """Gemini ``batchEmbedContents`` (``gemini-embedding-001``, 3072-d by default).

    Args:
        model_name: The model (``gemini-embedding-001``).
        task_type: ``None`` (default): ``RETRIEVAL_DOCUMENT`` for documents and
            ``RETRIEVAL_QUERY`` for queries. Any other value (``SEMANTIC_SIMILARITY``,
            ``CLASSIFICATION``, ...) is sent for both, as Chroma does.
        dimension: ``outputDimensionality`` (128-3072).
        api_key_env_var: Where the key is read (then ``$GEMINI_API_KEY``, ``$GOOGLE_API_KEY``).
        vertexai, project, location: Use Vertex AI through the SDK instead of an API key
            (credentials from Google's application-default login).
        api_key: The key itself (better left in the environment).
        api_base: Another server (default ``https://generativelanguage.googleapis.com``).
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).

    Model, task type, dimension and a non-default server are the cache namespace.
    """

    provider = "gemini"
    max_batch = 100
    timeout = 60.0
    config_keys: ClassVar[tuple[str, ...]] = (
        "model_name", "task_type", "dimension", "api_key_env_var", "vertexai", "project", "location", "api_base",
    )

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        task_type: str | None = None,
        dimension: int | None = None,
        api_key_env_var: str | None = "GEMINI_API_KEY",
        vertexai: bool | None = None,
        project: str | None = None,
        location: str | None = None,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        check_positive(self.provider, "dimension", dimension)
        if vertexai and api_key:
            raise ConfigurationError("gemini: Vertex AI uses Google credentials, not an API key; pass one or the other")
        self.model_name = model_name
        self.task_type = task_type
        self.dimension = dimension
        self.api_key_env_var = api_key_env_var
        self.vertexai = vertexai
        self.project = project
        self.location = location
        self.api_base = api_base
        if not vertexai:
            self.resolve_key(api_key, [api_key_env_var or "", "GEMINI_API_KEY", "GOOGLE_API_KEY"])
        self._client: Any = None

    @classmethod
    def spec_help(cls) -> str:
        return "gemini:MODEL_NAME  (e.g. gemini-embedding-001; key $GEMINI_API_KEY or $GOOGLE_API_KEY)"

    @property
    def base_url(self) -> str | None:
        return self.api_base.rstrip("/") if self.api_base else None

    def prepare(self) -> None:
        self.client()  # SDK import and client setup are not provider time

    def client(self) -> Any:
        """The SDK client, built on first use (the SDK is imported only then)."""
        if self._client is None:
            from google import genai
            from google.genai import types

            options = types.HttpOptions(
                base_url=self.base_url,
                api_version=None if self.vertexai else "v1beta",
                timeout=int(self.timeout * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),  # ours retry instead
            )
            if self.vertexai:
                self._client = genai.Client(vertexai=True, project=self.project, location=self.location, http_options=options)
            else:
                self._client = genai.Client(api_key=self.require_key(), http_options=options)
        return self._client

    def task(self, role: Role) -> str:
        return self.task_type or _ROLE_TASK[role]

    def embed_chunk(self, texts: list[str], role: Role) -> tuple[np.ndarray, int | None]:
        response = self.retrying(lambda: self._embed(texts, role), texts)
        rows = [getattr(e, "values", None) for e in (getattr(response, "embeddings", None) or [])]
        if any(r is None for r in rows):
            raise ProviderResponseError(self.provider, "an embedding has no values")
        return as_matrix(self.provider, rows, len(texts), self.dimension), None

    def _embed(self, texts: list[str], role: Role) -> Any:
        from google.genai import errors, types

        config = types.EmbedContentConfig(task_type=self.task(role), output_dimensionality=self.dimension)
        try:
            return self.client().models.embed_content(model=self.model_name, contents=texts, config=config)
        except errors.APIError as exc:
            headers = dict(getattr(exc.response, "headers", None) or {})
            raise status_error(self.provider, int(exc.code), exc.details, headers, exc.message) from None
        except Exception as exc:
            mapped = transport_error(self.provider, exc, self.timeout)
            if mapped is None:
                raise
            raise mapped from None

    def cache_identity(self, role: Role) -> dict[str, Any]:
        server = url_identity(self.base_url) if self.base_url and self.base_url != DEFAULT_BASE_URL else None
        return self.identity_with(
            {"model": self.model_name, "task_type": self.task(role), "dimension": self.dimension},
            vertexai=True if self.vertexai else None,
            api_base=server,
        )



class GoogleGenerativeAiEmbeddingFunction(GoogleGeminiEmbeddingFunction):
    """Chroma's older name and argument order for the same Gemini embeddings (no Vertex AI).

    Chroma defaults ``task_type`` to ``RETRIEVAL_DOCUMENT`` for documents *and* queries;
    here ``None`` (the default) picks the retrieval task per role, and an explicit value
    applies to both.
    """

    chroma_name = "cachedembed-google-generative-ai"
    """Its own name, so a persisted config rebuilds this class (the identity stays Gemini's)."""
    config_keys: ClassVar[tuple[str, ...]] = ("api_key_env_var", "model_name", "task_type", "dimension", "api_base")

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = DEFAULT_MODEL,
        task_type: str | None = None,
        api_key_env_var: str = "GEMINI_API_KEY",
        dimension: int | None = None,
        *,
        api_base: str | None = None,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(
            model_name=model_name,
            task_type=task_type,
            dimension=dimension,
            api_key_env_var=api_key_env_var,
            api_key=api_key,
            api_base=api_base,
            **remote,
        )

