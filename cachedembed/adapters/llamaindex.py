"""LlamaIndex: a cached ``llama_index.core.base.embeddings.base.BaseEmbedding``.

Use it wherever LlamaIndex takes an embed model::

    Settings.embed_model = Cached(OpenAIEmbedding(model="text-embedding-3-small"))

Every text and query is cached on its own (LlamaIndex's ``embeddings_cache`` keys whole
texts per model instance; ``IngestionCache`` keys whole batches), texts and queries in
separate namespaces, so asymmetric models never get the other role's vector.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

from ..keys import Role
from ..stores import Store
from ..wrapper import Cached
from ._engine import build_cached, check_wrappable, model_identity

__all__ = ["CachedEmbedding", "cached_embed_model", "wrap"]


class CachedEmbedding(BaseEmbedding):
    """A LlamaIndex embed model that serves ``inner``'s vectors through the cache.

    Takes ``inner``'s ``model_name``, ``embed_batch_size`` and ``num_workers``, so
    LlamaIndex batches exactly as before; only the texts missing from the cache reach
    ``inner`` (through its ``_get_text_embeddings`` / ``_get_query_embedding``, honouring
    its ``rate_limiter``). Vectors are the float32 values stored.

    Args:
        inner: The LlamaIndex embed model to cache.
        cache: A store or URL, as for :class:`~cachedembed.Cached`.
        namespace: Explicit namespace; required when ``inner``'s identity cannot be derived.
        **options: Other :class:`~cachedembed.Cached` options.
    """

    inner: BaseEmbedding = Field(description="The embed model whose vectors are cached.")
    _cached: Cached = PrivateAttr()

    def __init__(
        self, inner: BaseEmbedding, cache: Store | str | None = None, *, namespace: str | None = None, **options: Any
    ) -> None:
        check_wrappable(inner, BaseEmbedding, CachedEmbedding)
        super().__init__(  # type: ignore[call-arg]  # `inner` is this subclass's field
            inner=inner,
            model_name=inner.model_name,
            embed_batch_size=inner.embed_batch_size,
            num_workers=inner.num_workers,
        )
        self._cached = build_cached(
            inner, self._provider_call, lambda: model_identity(inner, "llamaindex"), cache, namespace, options
        )

    @classmethod
    def class_name(cls) -> str:
        return "CachedEmbedding"

    @property
    def cached(self) -> Cached:
        """The :class:`~cachedembed.Cached` engine behind this model (``stats()``, ``flush()``)."""
        return self._cached

    def _provider_call(self, texts: list[str], role: Role) -> list[Embedding]:
        inner = self.inner
        if inner.rate_limiter is not None:
            inner.rate_limiter.acquire()
        if role == "query":
            return [inner._get_query_embedding(q) for q in texts]
        return inner._get_text_embeddings(texts)

    def _embed(self, texts: list[str], role: Role) -> list[Embedding]:
        if not texts:
            return []
        result: list[Embedding] = self._cached.embed(texts, role).tolist()
        return result

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], "query")[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], "document")[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), "document")

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await asyncio.to_thread(self._embed, [query], "query"))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await asyncio.to_thread(self._embed, [text], "document"))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._embed, list(texts), "document")

    def stats(self) -> dict[str, Any]:
        """Lifetime totals of both namespaces in the cache (see :meth:`Cached.stats`)."""
        return self._cached.stats()

    def session_stats(self) -> dict[str, Any]:
        """What this object did since it was built (see :meth:`Cached.session_stats`)."""
        return self._cached.session_stats()


def cached_embed_model(
    inner: BaseEmbedding, cache: Store | str | None = None, *, namespace: str | None = None, **options: Any
) -> CachedEmbedding:
    """``inner`` with a persistent cache; same as ``Cached(inner, ...)``."""
    return CachedEmbedding(inner, cache, namespace=namespace, **options)


wrap = cached_embed_model
