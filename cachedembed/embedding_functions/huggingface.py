"""Hugging Face: Inference Providers feature-extraction, and Text Embeddings Inference servers.

Both answer a JSON ``{"inputs": [...]}`` POST with a bare list of vectors, so they share
:class:`_FeatureExtraction`. Same class names and arguments as Chroma's:

- :class:`HuggingFaceEmbeddingFunction` posts to the current router URL
  (``https://router.huggingface.co/hf-inference/models/{model}/pipeline/feature-extraction``;
  Chroma still uses the retired api-inference host) with ``x-wait-for-model: true``. A
  503 "model is currently loading" is retried after the body's ``estimated_time``. The
  router reports no token usage: tokens are estimated. Hugging Face documents no item
  limit; 32 texts per request keeps each request small.
- :class:`HuggingFaceEmbeddingServer` talks to a TEI server (``POST /embed``): the batch
  limit is read once per instance from ``GET /info`` (``max_client_batch_size``), tokens
  from the ``x-compute-tokens`` response header. The server URL is part of the cache
  namespace (it decides the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import ConfigurationError, ProviderError, ProviderResponseError
from ..keys import Role
from ._base import as_matrix, check_positive

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import JsonEmbeddingFunction, RemoteOptions, without_none

ROUTER_URL = "https://router.huggingface.co/hf-inference"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEI_DEFAULT_BATCH = 32
"""TEI's own default ``max_client_batch_size``, used when a server has no ``/info``."""


class _FeatureExtraction(JsonEmbeddingFunction):
    """POST ``{"inputs": texts, ...options}``; the answer is a list of vectors."""

    path: ClassVar[str] = ""

    def request_body(self, texts: list[str], role: Role) -> dict[str, Any]:
        return {"inputs": texts, **self.params(role)}

    def parse_response(
        self, payload: Any, headers: Mapping[str, str], expected: int
    ) -> tuple[np.ndarray, int | None]:
        if not isinstance(payload, list):
            raise ProviderResponseError(
                self.provider, f"expected a list of vectors, got {type(payload).__name__}"
            )
        if expected == 1 and payload and all(isinstance(x, (int, float)) for x in payload):
            payload = [payload]  # a single input may come back as a flat vector
        if (
            payload
            and isinstance(payload[0], list)
            and payload[0]
            and isinstance(payload[0][0], list)
        ):
            raise ProviderResponseError(
                self.provider,
                "got one vector per token, not per text: this model has no pooling; use a sentence-embedding model",
            )
        return as_matrix(self.provider, payload, expected), None


class HuggingFaceEmbeddingFunction(_FeatureExtraction):
    """A model on Hugging Face Inference Providers (hf-inference), as feature-extraction.

    Args:
        api_key: An ``hf_...`` token; better read from ``$HF_TOKEN`` (or ``api_key_env_var``).
        model_name: A sentence-embedding model id.
        api_key_env_var: Where the token is read (then ``$HF_TOKEN``).
        normalize: Ask the server to L2-normalise.
        truncate: Truncate over-long inputs instead of failing.
        api_base: Another server (default ``https://router.huggingface.co/hf-inference``);
            requests go to ``{api_base}/models/{model}/pipeline/feature-extraction``.
        wait_for_model: Send ``x-wait-for-model: true`` so a cold model is waited for.
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).
    """

    provider = "huggingface"
    default_base_url = ROUTER_URL
    max_batch = 32
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    model_name: str
    api_key_env_var: str
    normalize: bool | None
    truncate: bool | None
    wait_for_model: bool

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = DEFAULT_MODEL,
        api_key_env_var: str = "HF_TOKEN",
        normalize: bool | None = None,
        truncate: bool | None = None,
        api_base: str | None = None,
        wait_for_model: bool = True,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        self.keep_options(locals())
        self.resolve_key(
            api_key,
            [api_key_env_var, "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CHROMA_HUGGINGFACE_API_KEY"],
        )

    @classmethod
    def spec_help(cls) -> str:
        return "huggingface:MODEL_ID  (Inference Providers feature-extraction; token $HF_TOKEN)"

    def endpoint(self) -> str:
        return f"/models/{self.model_name}/pipeline/feature-extraction"

    def auth_headers(self) -> dict[str, str]:
        headers = super().auth_headers()
        if self.wait_for_model:
            headers["x-wait-for-model"] = "true"
        return headers

    def params(self, role: Role) -> dict[str, Any]:
        return without_none({"normalize": self.normalize, "truncate": self.truncate})

    def identity_params(self, role: Role) -> dict[str, Any]:
        return {"model": self.model_name, **self.params(role)}


class HuggingFaceEmbeddingServer(_FeatureExtraction):
    """A Text Embeddings Inference (TEI) server.

    Args:
        url: The server, e.g. ``http://localhost:8080`` (Chroma's ``.../embed`` form works too).
        api_key_env_var: Where a key is read, for servers started with ``--api-key``.
        api_key: That key itself.
        normalize, truncate, truncation_direction, dimensions: TEI's ``/embed`` options.
        prompt_name: A prompt the model's config defines, for documents (and queries
            unless ``query_prompt_name`` is given).
        query_prompt_name: The prompt for queries.
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).

    The server URL, the options and the role's prompt are the cache namespace.
    """

    provider = "tei"
    path = "/embed"
    default_base_url = ""
    max_batch = 1_000_000
    """No limit of our own: the server's ``/info`` decides."""
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    url: str
    api_key_env_var: str | None
    normalize: bool | None
    truncate: bool | None
    truncation_direction: str | None
    dimensions: int | None
    prompt_name: str | None
    query_prompt_name: str | None

    def __init__(
        self,
        url: str,
        api_key_env_var: str | None = None,
        api_key: str | None = None,
        normalize: bool | None = None,
        truncate: bool | None = None,
        truncation_direction: str | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = None,
        query_prompt_name: str | None = None,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"tei: url must be an http(s) URL like http://localhost:8080, got {url!r}"
            )
        check_positive(self.provider, "dimensions", dimensions)
        self.keep_options(locals())
        self.api_base = server_root(url)
        self.resolve_key(api_key, [api_key_env_var or ""])
        self._server_batch: int | None = None

    @classmethod
    def from_spec(cls, value: str) -> HuggingFaceEmbeddingServer:
        return cls(url=value)

    @classmethod
    def spec_help(cls) -> str:
        return "tei:URL  (a Text Embeddings Inference server, e.g. tei:http://localhost:8080)"

    def auth_headers(self) -> dict[str, str]:
        return super().auth_headers() if self._api_key else {}

    def batch_limit(self) -> int:
        """The smaller of :attr:`max_batch` and the server's ``max_client_batch_size`` (asked once)."""
        if self._server_batch is None:
            try:
                info, _ = self.client.get("/info")
            except ProviderError as exc:
                if exc.status != 404:
                    raise
                info = None  # a TEI-compatible server without /info: assume TEI's default
            limit = info.get("max_client_batch_size") if isinstance(info, dict) else None
            self._server_batch = (
                limit if isinstance(limit, int) and limit > 0 else TEI_DEFAULT_BATCH
            )
        return min(self.max_batch, self._server_batch)

    def params(self, role: Role) -> dict[str, Any]:
        prompt = (
            self.query_prompt_name
            if role == "query" and self.query_prompt_name
            else self.prompt_name
        )
        fields = {
            "normalize": self.normalize,
            "truncate": self.truncate,
            "truncation_direction": self.truncation_direction,
            "dimensions": self.dimensions,
            "prompt_name": prompt,
        }
        return without_none(fields)

    def parse_response(
        self, payload: Any, headers: Mapping[str, str], expected: int
    ) -> tuple[np.ndarray, int | None]:
        vectors, _ = super().parse_response(payload, headers, expected)
        reported = headers.get("x-compute-tokens")
        return vectors, int(reported) if reported and reported.isdigit() else None


def server_root(url: str) -> str:
    """``http://host:8080/embed`` (Chroma's form) or ``http://host:8080/`` -> ``http://host:8080``.

    A query (which may carry the server's key) is kept: requests go to the full URL.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    path = path[: -len("/embed")] if path.endswith("/embed") else path
    return urlunsplit(parts._replace(path=path))
