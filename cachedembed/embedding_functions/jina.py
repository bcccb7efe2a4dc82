"""Jina AI embeddings: ``POST {api_base}/v1/embeddings`` over plain JSON.

Same constructor as Chroma's ``JinaEmbeddingFunction``. Models with task adapters
(jina-embeddings-v3 and later) get ``task="retrieval.passage"`` for documents and
``"retrieval.query"`` for queries unless ``task`` / ``query_config`` say otherwise
(Chroma's semantics: ``task`` for both, ``query_config`` overriding fields for queries).
``late_chunking=True`` makes each vector depend on the whole batch, so such a function
sets ``bypass_cache`` and :class:`~cachedembed.Cached` sends every call through (with a warning).

The multimodal models (``jina-clip-v1``, ``jina-clip-v2``, ``jina-embeddings-v4``) also
embed images, into the texts' space: each is sent as ``{"image": "data:image/png;base64,..."}``
in ``input`` (PNG, so the model sees exactly the pixels the cache keyed), at most
:attr:`~JinaEmbeddingFunction.max_image_batch` per request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..keys import Role
from ._base import EmbeddedBatch
from ._images import png_data_uri
from ._parallel import AsyncScope
from ._remote import JsonEmbeddingFunction, RemoteOptions, without_none

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_BASE_URL = "https://api.jina.ai"
_TASK_MODELS = ("jina-embeddings-v3", "jina-embeddings-v4")
_ROLE_TASK: dict[Role, str] = {"document": "retrieval.passage", "query": "retrieval.query"}
_MULTIMODAL_MODELS = ("jina-clip-v1", "jina-clip-v2", "jina-embeddings-v4")


class JinaEmbeddingFunction(JsonEmbeddingFunction):
    """Jina AI ``/v1/embeddings`` (``jina-embeddings-v3``, ``jina-embeddings-v2-base-en``, ...).

    Args:
        api_key: The key; better read from ``$JINA_API_KEY`` (or ``api_key_env_var``).
        model_name: Chroma's default ``jina-embeddings-v2-base-en`` is kept.
        task: Task adapter for documents and queries (``retrieval.passage``,
            ``text-matching``, ``classification``, ``separation``, ...).
        late_chunking: Embed the batch as one context (vectors are then never cached).
        truncate: Truncate over-long inputs instead of failing.
        dimensions: Matryoshka output size.
        embedding_type: ``float`` (default), ``base64``, ``binary``, ``ubinary``.
        normalized: L2-normalise the vectors.
        query_config: Fields that replace the above for queries, e.g. ``{"task": "retrieval.query"}``.
        api_base: Another server (default ``https://api.jina.ai``).
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).

    Every field sent with a request except ``input`` is part of the cache namespace.
    """

    provider = "jina"
    path = "/v1/embeddings"
    default_base_url = DEFAULT_BASE_URL
    max_batch = 2048
    max_image_batch = 16
    """Most images per request: base64 PNGs make large bodies."""
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    model_name: str
    api_key_env_var: str
    task: str | None
    late_chunking: bool | None
    truncate: bool | None
    dimensions: int | None
    embedding_type: str | None
    normalized: bool | None
    query_config: dict[str, Any] | None

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = "jina-embeddings-v2-base-en",
        api_key_env_var: str = "JINA_API_KEY",
        task: str | None = None,
        late_chunking: bool | None = None,
        truncate: bool | None = None,
        dimensions: int | None = None,
        embedding_type: str | None = None,
        normalized: bool | None = None,
        query_config: dict[str, Any] | None = None,
        api_base: str | None = None,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        self.keep_options(locals())
        self.query_config = dict(query_config) if query_config is not None else None
        self.bypass_cache = bool(late_chunking)
        self.accepts_images = model_name.startswith(_MULTIMODAL_MODELS)
        self.resolve_key(api_key, [api_key_env_var, "CHROMA_JINA_API_KEY"])

    @classmethod
    def spec_help(cls) -> str:
        return "jina:MODEL_NAME  (e.g. jina-embeddings-v3; key $JINA_API_KEY)"

    def params(self, role: Role) -> dict[str, Any]:
        """Every request field but ``input`` for ``role``, unset ones left out."""
        task = self.task
        if task is None and any(self.model_name.startswith(m) for m in _TASK_MODELS):
            task = _ROLE_TASK[role]
        params: dict[str, Any] = {
            "model": self.model_name,
            "task": task,
            "late_chunking": self.late_chunking,
            "truncate": self.truncate,
            "dimensions": self.dimensions,
            "embedding_type": self.embedding_type,
            "normalized": self.normalized,
        }
        if role == "query" and self.query_config:
            params.update(self.query_config)
        return without_none(params)

    def embed_batches_concurrently(
        self, texts: Sequence[Any], role: Role, concurrency: int, scope: AsyncScope | None = None
    ) -> Iterator[EmbeddedBatch]:
        if not (texts and isinstance(texts[0], np.ndarray)):
            return super().embed_batches_concurrently(texts, role, concurrency, scope)
        # Every image is encoded before the first request: one that cannot be sent fails the
        # call before anything is paid for.
        inputs = [{"image": png_data_uri(image, self.provider)} for image in texts]
        chunks = [
            (start, inputs[start : start + self.max_image_batch])
            for start in range(0, len(inputs), self.max_image_batch)
        ]
        params = self.params(role)
        return self.run_exchanges(
            chunks,
            lambda chunk: self.exchange_body({**params, "input": chunk}, len(chunk)),
            concurrency,
            scope,
        )
