"""Which framework an object comes from (by module name, importing none), and who adapts it.

``Cached(obj)`` hands a LangChain, LlamaIndex or sentence-transformers object to the
adapter installed here by :mod:`cachedembed.adapters` (when ``cachedembed`` is
imported): the adapters are built on ``Cached``, so ``Cached`` reaches them through this
hook rather than by importing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# framework -> (module prefix, class name) of the base class that identifies it.
_FRAMEWORKS: dict[str, tuple[str, str]] = {
    "langchain": ("langchain_core.", "Embeddings"),
    "llamaindex": ("llama_index.core.", "BaseEmbedding"),
    "sentence_transformers": ("sentence_transformers.", "SentenceTransformer"),
}

_adapter: Callable[..., Any] | None = None


def framework_of(obj: Any) -> str | None:
    """The adapter module name for ``obj`` (``"langchain"``, ...), or ``None`` for anything else."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        for framework, (prefix, name) in _FRAMEWORKS.items():
            if cls.__name__ == name and module.startswith(prefix):
                return framework
    return None


def install_adapter(adapter: Callable[..., Any]) -> None:
    """Set what ``adapt`` calls: ``adapter(obj, cache, **options)`` -> the framework's cached object."""
    global _adapter
    _adapter = adapter


def adapt(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """``obj``'s framework adapter around a cache (``obj`` is one :func:`framework_of` knows)."""
    if _adapter is None:  # only if cachedembed/__init__ did not run, which Python never allows
        raise RuntimeError("cachedembed.adapters is not installed")
    return _adapter(obj, *args, **kwargs)
