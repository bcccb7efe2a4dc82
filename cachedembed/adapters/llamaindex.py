"""LlamaIndex: a cached ``llama_index.core.base.embeddings.base.BaseEmbedding``.

Use it wherever LlamaIndex takes an embed model::

    Settings.embed_model = Cached(OpenAIEmbedding(model="text-embedding-3-small"))

Every text and query is cached on its own (LlamaIndex's ``embeddings_cache`` keys whole
texts per model instance; ``IngestionCache`` keys whole batches), texts and queries in
separate namespaces, so asymmetric models never get the other role's vector.

A ``CachedEmbedding`` pickles (``IngestionPipeline(num_workers=...)`` sends its
transformations to worker processes): the wrapped model, the cache URL and the options
travel, and each worker reopens the cache itself. ``from_dict(to_dict())`` is refused:
the dict holds neither the wrapped model's class nor the cache.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence
from typing import Any, NoReturn

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.schema import BaseNode
from pydantic import BaseModel, Field, PrivateAttr

from ..errors import ConfigurationError
from ..keys import Role
from ..stores import Store
from ..wrapper import Cached
from ._engine import build_cached, check_wrappable, model_identity, reopenable_url

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
    _url: str | None = PrivateAttr()
    """The URL that reopens the cache in another process (``None``: see ``_unpicklable``)."""
    _unpicklable: str = PrivateAttr()
    _namespace: str | None = PrivateAttr()
    _options: dict[str, Any] = PrivateAttr()

    def __init__(
        self,
        inner: BaseEmbedding,
        cache: Store | str | None = None,
        *,
        namespace: str | None = None,
        **options: Any,
    ) -> None:
        check_wrappable(inner, BaseEmbedding, CachedEmbedding)
        super().__init__(  # type: ignore[call-arg]  # `inner` is this subclass's field
            inner=inner,
            model_name=inner.model_name,
            embed_batch_size=inner.embed_batch_size,
            num_workers=inner.num_workers,
        )
        self._url, self._unpicklable = reopenable_url(cache)
        self._namespace, self._options = namespace, dict(options)
        self._cached = self._open(cache)

    def _open(self, cache: Store | str | None) -> Cached:
        inner = self.inner
        return build_cached(
            inner,
            self._provider_call,
            lambda: model_identity(inner, "llamaindex"),
            cache,
            self._namespace,
            self._options,
            self._aprovider_call,
        )

    def __getstate__(self) -> dict[str, Any]:
        """Fields and the recipe of the cache; never the open store, its connections or locks."""
        if self._url is None:
            raise pickle.PicklingError(f"cannot pickle this CachedEmbedding: {self._unpicklable}")
        # pydantic's own state: LlamaIndex's BaseComponent would silently drop what fails to pickle.
        state = BaseModel.__getstate__(self)
        private = dict(state["__pydantic_private__"] or {})
        del private["_cached"]
        return {**state, "__pydantic_private__": private}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the fields, then reopen the cache (in this process, under its URL)."""
        BaseModel.__setstate__(self, state)
        self._cached = self._open(self._url)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> NoReturn:
        """Refused: ``to_dict()`` keeps neither the wrapped model's class nor the cache."""
        raise ConfigurationError(
            "CachedEmbedding cannot be rebuilt from to_dict()/to_json(): they keep neither the "
            "wrapped model's class nor the cache. Build it again with Cached(model, cache), "
            "or pickle it (IngestionPipeline workers do)"
        )

    @classmethod
    def class_name(cls) -> str:
        return "CachedEmbedding"

    @property
    def cached(self) -> Cached:
        """The :class:`~cachedembed.Cached` engine behind this model (``stats()``, ``flush()``)."""
        return self._cached

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Embed ``nodes`` as a pipeline transformation, then publish this call's counters."""
        try:
            return super().__call__(nodes, **kwargs)
        finally:
            self._publish_counters()

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        try:
            return await super().acall(nodes, **kwargs)
        finally:
            await asyncio.to_thread(self._publish_counters)

    def _publish_counters(self) -> None:
        # IngestionPipeline terminates its worker processes (no atexit), so hit counters
        # still buffered when a transformation returns would never reach the stats.
        store = self._cached.store
        try:
            store.flush()
        except Exception as exc:  # the vectors were served; counters are retried on the next flush
            store.report_failure(exc, "could not save usage counters yet")

    def _provider_call(self, texts: list[str], role: Role) -> list[Embedding]:
        inner = self.inner
        if inner.rate_limiter is not None:
            inner.rate_limiter.acquire()
        if role == "query":
            return [inner._get_query_embedding(q) for q in texts]
        return inner._get_text_embeddings(texts)

    async def _aprovider_call(self, texts: list[str], role: Role) -> list[Embedding]:
        inner = self.inner
        if inner.rate_limiter is not None:
            await inner.rate_limiter.async_acquire()
        if role == "query":
            return list(await asyncio.gather(*(inner._aget_query_embedding(q) for q in texts)))
        return await inner._aget_text_embeddings(texts)

    def _embed(self, texts: list[str], role: Role) -> list[Embedding]:
        if not texts:
            return []
        result: list[Embedding] = self._cached.embed(texts, role).tolist()
        return result

    async def _aembed(self, texts: list[str], role: Role) -> list[Embedding]:
        if not texts:
            return []
        result: list[Embedding] = (await self._cached.aembed(texts, role)).tolist()
        return result

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], "query")[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], "document")[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), "document")

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aembed([query], "query"))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aembed([text], "document"))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._aembed(list(texts), "document")

    def stats(self) -> dict[str, Any]:
        """Lifetime totals of both namespaces in the cache (see :meth:`Cached.stats`)."""
        return self._cached.stats()

    def session_stats(self) -> dict[str, Any]:
        """What this object did since it was built (see :meth:`Cached.session_stats`)."""
        return self._cached.session_stats()


def cached_embed_model(
    inner: BaseEmbedding,
    cache: Store | str | None = None,
    *,
    namespace: str | None = None,
    **options: Any,
) -> CachedEmbedding:
    """``inner`` with a persistent cache; same as ``Cached(inner, ...)``."""
    return CachedEmbedding(inner, cache, namespace=namespace, **options)


wrap = cached_embed_model
