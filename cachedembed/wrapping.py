"""``cachedembed.wrap(obj)``: any embedding object behind the cache, typed per framework."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from .frameworks import framework_of

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from sentence_transformers import SentenceTransformer

    from .adapters.langchain import CachedEmbeddings
    from .adapters.llamaindex import CachedEmbedding
    from .adapters.sentence_transformers import CachedSentenceTransformer
    from .stores import Store
    from .wrapper import Cached


@overload
def wrap(obj: Embeddings, cache: Store | str | None = None, **options: Any) -> CachedEmbeddings: ...
@overload
def wrap(
    obj: BaseEmbedding, cache: Store | str | None = None, **options: Any
) -> CachedEmbedding: ...
@overload
def wrap(
    obj: SentenceTransformer, cache: Store | str | None = None, **options: Any
) -> CachedSentenceTransformer: ...
@overload
def wrap(obj: Any, cache: Store | str | None = None, **options: Any) -> Cached: ...
def wrap(obj: Any, cache: Store | str | None = None, **options: Any) -> Any:
    """``obj`` behind a persistent cache, as the same kind of object it is.

    A LangChain ``Embeddings``, LlamaIndex ``BaseEmbedding`` or ``SentenceTransformer``
    gets its framework's adapter; anything else a :class:`~cachedembed.Cached`. The options
    are ``Cached``'s. ``Cached(obj)`` does the same at run time, but a type checker sees a
    ``Cached`` there; here it sees the adapter's type.
    """
    if framework_of(obj) is not None:
        from . import adapters

        return adapters.wrap(obj, cache, **options)
    from .wrapper import Cached

    return Cached(obj, cache, **options)
