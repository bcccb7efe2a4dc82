"""Adapters that present a cached model through the interface its framework expects.

* :mod:`cachedembed.adapters.langchain`: a LangChain ``Embeddings``.
* :mod:`cachedembed.adapters.llamaindex`: a LlamaIndex ``BaseEmbedding``.
* :mod:`cachedembed.adapters.sentence_transformers`: a ``SentenceTransformer`` whose
  ``encode`` is cached.

``cachedembed.wrap(obj)`` picks the adapter, typed per framework; ``Cached(obj)`` does the
same at run time (through the hook :func:`install` sets). This module only recognises
which framework an object comes from, by the module names of its classes: it imports no
framework, so ``import cachedembed`` stays light and nobody pays for a framework they do
not use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..frameworks import framework_of, install_adapter

__all__ = ["framework_of", "install", "wrap"]


def wrap(obj: Any, cache: Any = None, **options: Any) -> Any:
    """Wrap a framework object in its adapter; the options are :class:`~cachedembed.Cached`'s."""
    framework = framework_of(obj)
    if framework is None:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            f"{type(obj).__name__} is not a LangChain, LlamaIndex or sentence-transformers model"
        )
    module = importlib.import_module(f"{__name__}.{framework}")
    return module.wrap(obj, cache, **options)


def install() -> None:
    """Let ``Cached(obj)`` hand framework objects to their adapter (done by ``import cachedembed``)."""
    install_adapter(wrap)
