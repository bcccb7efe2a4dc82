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

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, ProviderError, ProviderResponseError
from ..keys import Role
from ._base import as_matrix, check_positive

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import Exchange, RemoteOptions, Request, SdkEmbeddingFunction, named_arguments

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-embedding-001"
_ROLE_TASK: dict[Role, str] = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}


class GoogleGeminiEmbeddingFunction(SdkEmbeddingFunction):
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
    default_base_url = DEFAULT_BASE_URL
    max_batch = 100
    timeout = 60.0
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    model_name: str
    task_type: str | None
    dimension: int | None
    api_key_env_var: str | None
    vertexai: bool | None
    project: str | None
    location: str | None

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
        self.keep_options(locals())
        check_positive(self.provider, "dimension", dimension)
        if vertexai and api_key:
            raise ConfigurationError(
                "gemini: Vertex AI uses Google credentials, not an API key; pass one or the other"
            )
        if not vertexai:
            self.resolve_key(api_key, [api_key_env_var or "", "GEMINI_API_KEY", "GOOGLE_API_KEY"])

    @classmethod
    def spec_help(cls) -> str:
        return (
            "gemini:MODEL_NAME  (e.g. gemini-embedding-001; key $GEMINI_API_KEY or $GOOGLE_API_KEY)"
        )

    @property
    def base_url(self) -> str | None:
        """``api_base``; ``None`` lets the SDK pick (Gemini API or Vertex AI)."""
        return self.api_base.rstrip("/") if self.api_base else None

    def make_client(self) -> Any:
        from google import genai
        from google.genai import types

        options = types.HttpOptions(
            base_url=self.base_url,
            api_version=None if self.vertexai else "v1beta",
            timeout=int(self.timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),  # ours retry instead
        )
        if self.vertexai:
            return genai.Client(
                vertexai=True, project=self.project, location=self.location, http_options=options
            )
        return genai.Client(api_key=self.require_key(), http_options=options)

    def make_async_client(self) -> Any:
        # The SDK's async surface hangs off a client; a fresh one per loop owns that loop's connections.
        return self.make_client().aio

    def task(self, role: Role) -> str:
        return self.task_type or _ROLE_TASK[role]

    def exchange(self, texts: list[str], role: Role) -> Exchange:
        from google.genai import types

        config = types.EmbedContentConfig(
            task_type=self.task(role), output_dimensionality=self.dimension
        )
        response = yield Request(
            lambda client: client.models.embed_content(
                model=self.model_name, contents=texts, config=config
            ),
            texts,
        )
        rows = [getattr(e, "values", None) for e in (getattr(response, "embeddings", None) or [])]
        if any(r is None for r in rows):
            raise ProviderResponseError(self.provider, "an embedding has no values")
        return as_matrix(self.provider, rows, len(texts), self.dimension), None

    def client_error(self, exc: Exception) -> ProviderError | None:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            return self.status_error(
                int(exc.code), exc.details, getattr(exc.response, "headers", None), exc.message
            )
        return super().client_error(exc)

    def batch_adapter(self, role: Role = "document") -> Any:
        """Gemini's batch mode (half price, within 24 h) for :meth:`cachedembed.Cached.submit_batch`."""
        if self.vertexai:
            raise ConfigurationError(
                "gemini: batch mode for embeddings is a Gemini Developer API feature, not Vertex AI's"
            )
        from .gemini_batch import GeminiBatchAdapter

        return GeminiBatchAdapter(self, role)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return self.identity_with(
            {"model": self.model_name, "task_type": self.task(role), "dimension": self.dimension},
            vertexai=True if self.vertexai else None,
            api_base=self.server_identity(),
        )


class GoogleGenerativeAiEmbeddingFunction(GoogleGeminiEmbeddingFunction):
    """Chroma's older name and argument order for the same Gemini embeddings (no Vertex AI).

    Chroma defaults ``task_type`` to ``RETRIEVAL_DOCUMENT`` for documents *and* queries;
    here ``None`` (the default) picks the retrieval task per role, and an explicit value
    applies to both.
    """

    chroma_name = "cachedembed-google-generative-ai"
    """Its own name, so a persisted config rebuilds this class (the identity stays Gemini's)."""

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
        super().__init__(**named_arguments(locals()), **remote)  # the same options, by name
