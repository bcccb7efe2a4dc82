"""Adapters that present a cached model through the interface its framework expects.

* :mod:`cachedembed.adapters.langchain`: a LangChain ``Embeddings``.
* :mod:`cachedembed.adapters.llamaindex`: a LlamaIndex ``BaseEmbedding``.
* :mod:`cachedembed.adapters.sentence_transformers`: a ``SentenceTransformer`` whose
  ``encode`` is cached.

``Cached(obj)`` picks the adapter itself. This module only recognises which framework an
object comes from, by the module names of its classes: it imports no framework, so
``import cachedembed`` stays light and nobody pays for a framework they do not use.
"""

from __future__ import annotations

import importlib
from typing import Any

# framework -> (module prefix, class name) of the base class that identifies it.
_FRAMEWORKS: dict[str, tuple[str, str]] = {
    "langchain": ("langchain_core.", "Embeddings"),
    "llamaindex": ("llama_index.core.", "BaseEmbedding"),
    "sentence_transformers": ("sentence_transformers.", "SentenceTransformer"),
}

__all__ = ["framework_of", "wrap"]


def framework_of(obj: Any) -> str | None:
    """The adapter module name for ``obj`` (``"langchain"``, ...), or ``None`` for anything else."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        for framework, (prefix, name) in _FRAMEWORKS.items():
            if cls.__name__ == name and module.startswith(prefix):
                return framework
    return None


def wrap(obj: Any, cache: Any = None, **options: Any) -> Any:
    """Wrap a framework object in its adapter; the options are :class:`~cachedembed.Cached`'s."""
    framework = framework_of(obj)
    if framework is None:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"{type(obj).__name__} is not a LangChain, LlamaIndex or sentence-transformers model")
    module = importlib.import_module(f"{__name__}.{framework}")
    return module.wrap(obj, cache, **options)
