"""Chroma integration: registering ``Cached`` so Chroma can rebuild it from a collection's config.

Chroma stores ``{"name": ef.name(), "config": ef.get_config()}`` with a collection and,
when it is reopened without an embedding function, calls ``build_from_config`` on the
class registered under that name (the round trip itself is ``Cached``'s). ``Cached``
registers itself as ``cachedembed`` (never under a built-in name, which would replace
Chroma's class for the whole process) as soon as both packages are imported, in either
order, without importing chromadb itself.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

_CHROMA_EF_MODULE = "chromadb.utils.embedding_functions"


def register() -> None:
    """Register ``Cached`` (and the shipped provider classes) with Chroma's registry.

    Through Chroma's public ``register_embedding_function``; a shipped class never replaces
    a function Chroma (or the user) registered under its name first.
    """
    from chromadb.utils.embedding_functions import (
        known_embedding_functions,
        register_embedding_function,
    )

    from .embedding_functions._registry import by_name
    from .wrapper import Cached

    register_embedding_function(Cached)
    for name, cls in by_name().items():
        if name not in known_embedding_functions:
            register_embedding_function(cls)


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
