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
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, get_args

from .errors import ConfigurationError
from .keys import Role
from .redact import redact_urls

if TYPE_CHECKING:
    from .wrapper import Cached

_CHROMA_EF_MODULE = "chromadb.utils.embedding_functions"


def _public_url(url: str) -> str:
    """The cache URL without its password (Chroma persists the config in plain text)."""
    from .stores import redact_url

    # Dropped rather than masked: a rebuilt wrapper must not try "***" as the password.
    return redact_url(url, drop=True)


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
            # URLs lose their credentials: Chroma persists this in plain text.
            inner = {"name": inner_name, "config": redact_urls(dict(inner_config))}
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


_KEYED_OPTIONS = ("namespace", "dtype", "hash", "normalize_unicode")
"""Wrapper options that are part of the namespace key (with the wrapped function's identity)."""


class _Configured:
    """A foreign function seen only through its persisted name and config (for its identity)."""

    def __init__(self, inner: Mapping[str, Any]) -> None:
        self._name = inner.get("name")
        self._config = inner.get("config") or {}

    def name(self) -> Any:
        return self._name

    def get_config(self) -> Any:
        return self._config


def _inner_identity(inner: Mapping[str, Any], role: Role) -> dict[str, Any]:
    """The identity the wrapped function of a persisted config has for ``role``."""
    from .embedding_functions import registered
    from .identity import foreign_identity

    cls = registered(str(inner.get("name")))
    if cls is not None:  # a shipped function: cheap to build (no request, key read lazily)
        return cls.build_from_config(inner.get("config") or {}).cache_identity(role)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty config is warned about at creation
        return foreign_identity(_Configured(inner))


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    flat_before = {**before.get("config", {}), **before}
    flat_after = {**after.get("config", {}), **after}
    keys = set(flat_before) | set(flat_after)
    return sorted(k for k in keys if k != "config" and flat_before.get(k) != flat_after.get(k))


def check_config_update(wrapper: Cached, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse a ``collection.modify`` the wrapped function refuses, or that changes the namespace."""
    old_inner, new_inner = old.get("inner") or {}, new.get("inner") or {}
    own_check = getattr(wrapper.ef, "validate_config_update", None)
    if callable(own_check) and old_inner.get("name") == new_inner.get("name"):
        own_check(old_inner.get("config") or {}, new_inner.get("config") or {})
    remedy = (
        "it names the cache namespace, so the collection's vectors and the new ones would mix; "
        "create a new collection for the new model or options"
    )
    for key in _KEYED_OPTIONS:
        if old.get(key) != new.get(key):
            raise ValueError(f"cannot change {key!r} of a cached embedding function: {remedy}")
    if new.get("namespace") is not None:
        return  # an explicit namespace, unchanged: it alone is the identity
    for role in get_args(Role):
        changed = _changed(_inner_identity(old_inner, role), _inner_identity(new_inner, role))
        if changed:
            raise ValueError(
                f"cannot change {', '.join(map(repr, changed))} of the cached embedding function: {remedy}"
            )


def register() -> None:
    """Register ``Cached`` (and the shipped provider classes) with Chroma's registry."""
    from chromadb.utils.embedding_functions import known_embedding_functions

    from .embedding_functions._registry import by_name
    from .wrapper import Cached

    known_embedding_functions[Cached.name()] = Cached  # type: ignore[assignment]
    for name, cls in by_name().items():
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
