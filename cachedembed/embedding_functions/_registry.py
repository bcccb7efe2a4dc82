"""Which shipped class answers to which name: Chroma's ``name()`` and the CLI's provider prefix.

Kept apart from :mod:`._base` so that the base registers subclasses here, and the
package imports provider modules on demand, without either importing the other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import ProviderEmbeddingFunction

CLASSES: dict[str, str] = {
    "DefaultEmbeddingFunction": "sentence_transformer",
    "SentenceTransformerEmbeddingFunction": "sentence_transformer",
    "OpenAIEmbeddingFunction": "openai",
    "JinaEmbeddingFunction": "jina",
    "VoyageAIEmbeddingFunction": "voyage",
    "OllamaEmbeddingFunction": "ollama",
    "CohereEmbeddingFunction": "cohere",
    "GoogleGenerativeAiEmbeddingFunction": "google",
    "GoogleGeminiEmbeddingFunction": "google",
    "HuggingFaceEmbeddingFunction": "huggingface",
    "HuggingFaceEmbeddingServer": "huggingface",
    "InstructorEmbeddingFunction": "instructor",
    "OpenCLIPEmbeddingFunction": "open_clip",
}
"""Class name -> module (of this package) that defines it; imported on first use."""

_by_name: dict[str, type[ProviderEmbeddingFunction]] = {}
_by_provider: dict[str, type[ProviderEmbeddingFunction]] = {}


def register(cls: type[ProviderEmbeddingFunction], *, as_provider: bool) -> None:
    """Record ``cls`` under its Chroma name, and under its provider name when it is the
    class a CLI spec ``PROVIDER:...`` builds (an alias class shares another's provider)."""
    _by_name[cls.name()] = cls
    if as_provider:
        _by_provider[cls.provider] = cls


def load_all() -> None:
    """Import every provider module so each class is registered."""
    for module in set(CLASSES.values()):
        importlib.import_module(f"{__package__}.{module}")


def registered(name: str) -> type[ProviderEmbeddingFunction] | None:
    """The shipped class registered under Chroma ``name`` (e.g. ``cachedembed-openai``)."""
    load_all()
    return _by_name.get(name)


def by_name() -> dict[str, type[ProviderEmbeddingFunction]]:
    """Every shipped class by its Chroma name."""
    load_all()
    return dict(_by_name)


def providers() -> dict[str, type[ProviderEmbeddingFunction]]:
    """Every shipped provider class by its ``provider`` name (the ``--model`` prefix)."""
    load_all()
    return dict(_by_provider)
