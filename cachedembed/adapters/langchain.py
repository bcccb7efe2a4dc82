"""LangChain: a cached ``langchain_core.embeddings.Embeddings``.

Migrating from LangChain's own cache is one line::

    # before
    embedder = CacheBackedEmbeddings.from_bytes_store(underlying, store, namespace=underlying.model)
    # after
    embedder = Cached(underlying, "sqlite:///embeddings.db")

Unlike ``CacheBackedEmbeddings``, queries are cached too (apart from documents), the
namespace is derived from the model's class and settings (so two models never collide),
duplicate texts are embedded once, and vectors are stored as float32 blobs, not JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings

from ..errors import InvalidInputError
from ..keys import Role
from ..stores import Store
from ._engine import build_cached, check_wrappable, model_identity

__all__ = ["CachedEmbeddings", "cached_embeddings", "wrap"]


class CachedEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` that serves ``underlying``'s vectors through the cache.

    Documents and queries live in separate namespaces. Vectors come back as lists of
    Python floats holding the float32 values stored (a provider's float64 output is
    rounded to float32 once, so a miss and later hits return the same numbers).

    Args:
        underlying: The LangChain embeddings to cache.
        cache: A store or URL, as for :class:`~cachedembed.Cached`.
        namespace: Explicit namespace; required when the model's identity cannot be
            derived (no pydantic fields and no ``model``/``model_name`` attribute).
        **options: Other :class:`~cachedembed.Cached` options (``dtype``, ``store_text``,
            ``batch_size`` = texts per ``embed_documents`` call to ``underlying``, ...).
    """

    def __init__(
        self,
        underlying: Embeddings,
        cache: Store | str | None = None,
        *,
        namespace: str | None = None,
        **options: Any,
    ) -> None:
        check_wrappable(underlying, Embeddings, CachedEmbeddings)
        self.underlying = underlying
        self.cached = build_cached(
            underlying,
            self._provider_call,
            lambda: model_identity(underlying, "langchain"),
            cache,
            namespace,
            options,
            self._aprovider_call,
        )

    def _provider_call(self, texts: list[str], role: Role) -> Any:
        if role == "query":
            # LangChain has no batch query call.
            return [self.underlying.embed_query(t) for t in texts]
        return self.underlying.embed_documents(texts)

    async def _aprovider_call(self, texts: list[str], role: Role) -> Any:
        if role == "query":
            return await asyncio.gather(*(self.underlying.aembed_query(t) for t in texts))
        return await self.underlying.aembed_documents(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents; ``[]`` for no texts, as LangChain's models do."""
        if not _documents(texts):
            return []
        result: list[list[float]] = self.cached.embed(texts, "document").tolist()
        return result

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (cached apart from documents)."""
        result: list[float] = self.cached.embed([_query(text)], "query")[0].tolist()
        return result

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` for async code: the misses go to the model's own
        ``aembed_documents`` on this event loop; the store is used from a worker thread."""
        if not _documents(texts):
            return []
        result: list[list[float]] = (await self.cached.aembed(texts, "document")).tolist()
        return result

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` for async code; single-flight holds across tasks."""
        result: list[float] = (await self.cached.aembed([_query(text)], "query"))[0].tolist()
        return result

    def stats(self) -> dict[str, Any]:
        """Lifetime totals of both namespaces in the cache (see :meth:`Cached.stats`)."""
        return self.cached.stats()

    def session_stats(self) -> dict[str, Any]:
        """What this object did since it was built (see :meth:`Cached.session_stats`)."""
        return self.cached.session_stats()

    def __repr__(self) -> str:
        return f"CachedEmbeddings({self.underlying!r}, cache={self.cached.store.url!r})"


def _documents(texts: Any) -> bool:
    """Whether there is anything to embed; one str instead of a list is refused."""
    if isinstance(texts, str):
        raise InvalidInputError(
            "embed_documents takes a list of str, got one str (use embed_query?)"
        )
    return bool(texts)


def _query(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"embed_query takes one str, got {type(text).__name__}")
    return text


def cached_embeddings(
    underlying: Embeddings,
    cache: Store | str | None = None,
    *,
    namespace: str | None = None,
    **options: Any,
) -> CachedEmbeddings:
    """``underlying`` with a persistent cache; same as ``Cached(underlying, ...)``."""
    return CachedEmbeddings(underlying, cache, namespace=namespace, **options)


wrap = cached_embeddings
