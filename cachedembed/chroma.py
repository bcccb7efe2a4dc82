"""Chroma integration: persisting ``Cached`` in a collection's config and rebuilding it.

Chroma stores ``{"name": ef.name(), "config": ef.get_config()}`` with a collection and,
when it is reopened without an embedding function, calls ``build_from_config`` on the
class registered under that name. ``Cached`` registers itself as ``cachedembed`` (never
under a built-in name, which would replace Chroma's class for the whole process) as
soon as both packages are imported, in either order, without importing chromadb itself.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .wrapper import Cached

_CHROMA_EF_MODULE = "chromadb.utils.embedding_functions"


def _public_url(url: str) -> str:
    """The cache URL without its password (Chroma persists the config in plain text)."""
    if url.startswith(("memory://", "diskcache://")):
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.password:
        return url
    # URL.set() treats password=None as "unchanged"; _replace really drops it.
    return parsed._replace(password=None).render_as_string(hide_password=False)


def _private_url(url: str) -> str:
    """Put the password back from ``$CACHEDEMBED_URL`` when it names the same database."""
    env = os.environ.get("CACHEDEMBED_URL")
    if env and not url.startswith(("memory://", "diskcache://")) and _public_url(env) == url:
        return env
    return url


def wrapper_config(wrapper: Cached) -> dict[str, Any]:
    """The JSON config Chroma persists for a ``Cached`` function (no secrets)."""
    ef = wrapper.ef
    inner: dict[str, Any] | None = None
    name = getattr(ef, "name", None)
    get_config = getattr(ef, "get_config", None)
    if callable(name) and callable(get_config):
        inner_name, inner_config = name(), get_config()
        if isinstance(inner_name, str) and isinstance(inner_config, Mapping):
            inner = {"name": inner_name, "config": dict(inner_config)}
    if inner is None:
        raise ConfigurationError(
            f"{type(ef).__name__} has no name()/get_config(), so Chroma cannot persist it; "
            "the collection will need the embedding function passed explicitly"
        )
    return {
        "inner": inner,
        "cache": _public_url(wrapper.store.url),
        "namespace": wrapper.namespace,
        "store_text": wrapper.store_text,
        "dtype": wrapper.dtype,
        "hash": wrapper.hash,
        "normalize_unicode": wrapper.normalize_unicode,
        "batch_size": wrapper.batch_size,
        "on_store_error": wrapper.on_store_error,
    }


def wrapper_from_config(config: Mapping[str, Any]) -> Cached:
    """Rebuild a ``Cached`` from :func:`wrapper_config` output, sharing the open store."""
    from .embedding_functions import registered
    from .wrapper import Cached

    inner = config["inner"]
    cls: Any = registered(inner["name"])
    if cls is None:
        from chromadb.utils.embedding_functions import known_embedding_functions

        cls = known_embedding_functions.get(inner["name"])
    if cls is None:
        raise ConfigurationError(
            f"embedding function {inner['name']!r} is not registered; import the module that "
            "defines it (and register it with chromadb) before opening the collection"
        )
    ef = cls.build_from_config(inner["config"])
    return Cached(
        ef,
        _private_url(config["cache"]),
        namespace=config.get("namespace"),
        store_text=config.get("store_text", False),
        dtype=config.get("dtype", "float32"),
        hash=config.get("hash", "xxh3"),
        normalize_unicode=config.get("normalize_unicode"),
        batch_size=config.get("batch_size", 256),
        on_store_error=config.get("on_store_error", "warn"),
    )


def register() -> None:
    """Register ``Cached`` (and the shipped provider classes) with Chroma's registry."""
    from chromadb.utils.embedding_functions import known_embedding_functions

    from .embedding_functions import _base, _load_all
    from .wrapper import Cached

    _load_all()
    known_embedding_functions[Cached.name()] = Cached  # type: ignore[assignment]
    for name, cls in _base._registry.items():
        known_embedding_functions.setdefault(name, cls)  # type: ignore[arg-type]


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register` right after Chroma's embedding-function module is imported."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _CHROMA_EF_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            register()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install_hook() -> None:
    """Register now if Chroma is loaded, else as soon as it is."""
    if _CHROMA_EF_MODULE in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
