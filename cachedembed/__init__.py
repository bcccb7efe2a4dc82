"""cachedembed: a persistent caching layer for embedding functions.

>>> from cachedembed import Cached
>>> from cachedembed.embedding_functions import DefaultEmbeddingFunction
>>> ef = Cached(DefaultEmbeddingFunction())       # doctest: +SKIP
>>> vectors = ef(["first doc", "second doc"])      # doctest: +SKIP

The public API is what this module exports, plus the modules ``docs/architecture.md``
lists as supported (``embedding_functions``, ``adapters``, ``stores``, ``manage``,
``exchange``, ``stats``, ``settings``); every other module is private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CachedEmbedError,
    ConfigurationError,
    InvalidInputError,
    PendingBatchError,
    ProviderError,
    ProviderResponseError,
    StoreError,
)

if TYPE_CHECKING:
    from .decorator import cached
    from .embedding_functions._http import RetryPolicy
    from .stores import Store, open_store
    from .stores.outage import StoreUnavailable
    from .usage import UsageDelta
    from .wrapper import Cached, Embedded
    from .wrapping import wrap

__version__ = "0.1.0"

__all__ = [
    "Cached",
    "CachedEmbedError",
    "ConfigurationError",
    "Embedded",
    "InvalidInputError",
    "PendingBatchError",
    "ProviderError",
    "ProviderResponseError",
    "RetryPolicy",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UsageDelta",
    "__version__",
    "cached",
    "open_store",
    "wrap",
]

_LAZY = {
    "Cached": ".wrapper",
    "cached": ".decorator",
    "Embedded": ".wrapper",
    "RetryPolicy": ".embedding_functions._http",
    "StoreUnavailable": ".stores.outage",
    "UsageDelta": ".usage",
    "Store": ".stores",
    "open_store": ".stores",
    "wrap": ".wrapping",
}


def __getattr__(name: str) -> Any:
    # numpy, SQLAlchemy and friends load on first use, keeping `import cachedembed` light.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cachedembed' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


def _install_chroma_hook() -> None:
    from .chroma import install_hook

    install_hook()


def _install_adapters() -> None:
    # Cached(obj) reaches the framework adapters (which are built on it) through this hook.
    from .adapters import install

    install()


_install_chroma_hook()
_install_adapters()
