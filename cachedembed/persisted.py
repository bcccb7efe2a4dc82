"""``Cached`` in Chroma's persisted config: saved without secrets, rebuilt, changes checked.

Chroma stores ``{"name": ef.name(), "config": ef.get_config()}`` with a collection and,
when it is reopened without an embedding function, calls ``build_from_config`` on the
class registered under that name. ``Cached``'s config is its own options around the
wrapped function's name and config; :class:`ChromaConfig` holds the rest of Chroma's
protocol (the checks before a change, the distance spaces).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Protocol, get_args

from .embedding_functions import registered
from .errors import ConfigurationError
from .identity import foreign_identity
from .keys import Role
from .redact import redact_urls
from .stores import Store, private_url, public_url

KEYED_OPTIONS = ("namespace", "dtype", "hash", "normalize_unicode")
"""Wrapper options that are part of the namespace key (with the wrapped function's identity)."""
SAVED_OPTIONS = (
    "namespace",
    "store_text",
    "dtype",
    "hash",
    "normalize_unicode",
    "batch_size",
    "on_store_error",
)
"""Wrapper options a collection's config keeps (the others are the process's own choice)."""


class Saveable(Protocol):
    """What :func:`saved_config` reads: the wrapped function, the store, the options by name."""

    ef: Any
    store: Store


def saved_config(cached: Saveable) -> dict[str, Any]:
    """``Cached.get_config()``: the wrapped function, the cache URL and :data:`SAVED_OPTIONS`."""
    return {
        "inner": inner_config(cached.ef),
        "cache": public_url(cached.store.url),
        **{key: getattr(cached, key) for key in SAVED_OPTIONS},
    }


def rebuilt_arguments(config: Mapping[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """The wrapped function, cache URL and options to rebuild a ``Cached`` from its saved
    config with; an option the config lacks (saved by an older version) takes its default."""
    ef, url = build_inner(config["inner"]), private_url(config["cache"])
    return ef, url, {key: config[key] for key in SAVED_OPTIONS if key in config}


def inner_config(ef: Any) -> dict[str, Any]:
    """``{"name", "config"}`` of the wrapped function, URLs without credentials (it is persisted in plain text)."""
    name = getattr(ef, "name", None)
    get_config = getattr(ef, "get_config", None)
    if callable(name) and callable(get_config):
        inner_name, config = name(), get_config()
        if isinstance(inner_name, str) and isinstance(config, Mapping):
            return {"name": inner_name, "config": redact_urls(dict(config))}
    raise ConfigurationError(
        f"{type(ef).__name__} has no name()/get_config(), so Chroma cannot persist it; "
        "the collection will need the embedding function passed explicitly"
    )


def build_inner(inner: Mapping[str, Any]) -> Any:
    """The wrapped function of a persisted config: a shipped class, or one registered with Chroma."""
    cls: Any = registered(inner["name"])
    if cls is None:
        from chromadb.utils.embedding_functions import known_embedding_functions

        cls = known_embedding_functions.get(inner["name"])
    if cls is None:
        raise ConfigurationError(
            f"embedding function {inner['name']!r} is not registered; import the module that "
            "defines it (and register it with chromadb) before opening the collection"
        )
    return cls.build_from_config(inner["config"])


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


def check_config_update(ef: Any, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse a ``collection.modify`` the wrapped ``ef`` refuses, or that changes the namespace."""
    old_inner, new_inner = old.get("inner") or {}, new.get("inner") or {}
    own_check = getattr(ef, "validate_config_update", None)
    if callable(own_check) and old_inner.get("name") == new_inner.get("name"):
        own_check(old_inner.get("config") or {}, new_inner.get("config") or {})
    remedy = (
        "it names the cache namespace, so the collection's vectors and the new ones would mix; "
        "create a new collection for the new model or options"
    )
    for key in KEYED_OPTIONS:
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


class ChromaConfig:
    """Chroma's embedding-function protocol beyond the calls and the config round trip."""

    ef: Any

    @staticmethod
    def name() -> str:
        return "cachedembed"

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        fn = getattr(self.ef, "default_space", None)
        return fn() if callable(fn) else "l2"

    def supported_spaces(self) -> list[str]:
        fn = getattr(self.ef, "supported_spaces", None)
        return list(fn()) if callable(fn) else ["cosine", "l2", "ip"]

    @staticmethod
    def validate_config(config: Mapping[str, Any]) -> None:
        if "inner" not in config and "namespace" not in config:
            raise ValueError(
                "cachedembed config needs the wrapped function ('inner') or a namespace"
            )

    def validate_config_update(
        self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]
    ) -> None:
        """Chroma's check before ``collection.modify``: the wrapped function's own, then ours.

        Raises ``ValueError`` for a change the wrapped function refuses, or one that would
        move the collection to another cache namespace (its vectors and the new ones mixed).
        """
        check_config_update(self.ef, old_config, new_config)
