"""Embedding functions for the providers Chroma documents, and a few more.

Same class names and constructor arguments as ``chromadb.utils.embedding_functions``, so
switching the import is enough; each works alone or inside :class:`cachedembed.Cached`.
One module per provider, all with the shape of :class:`ProviderEmbeddingFunction`.
Provider SDKs are imported only when a function is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._base import EmbeddedBatch, ProviderEmbeddingFunction
from ._limits import RateLimiter
from ._registry import CLASSES, providers, registered

if TYPE_CHECKING:
    from .cohere import CohereEmbeddingFunction as CohereEmbeddingFunction
    from .google import GoogleGeminiEmbeddingFunction as GoogleGeminiEmbeddingFunction
    from .google import GoogleGenerativeAiEmbeddingFunction as GoogleGenerativeAiEmbeddingFunction
    from .huggingface import HuggingFaceEmbeddingFunction as HuggingFaceEmbeddingFunction
    from .huggingface import HuggingFaceEmbeddingServer as HuggingFaceEmbeddingServer
    from .instructor import InstructorEmbeddingFunction as InstructorEmbeddingFunction
    from .jina import JinaEmbeddingFunction as JinaEmbeddingFunction
    from .ollama import OllamaEmbeddingFunction as OllamaEmbeddingFunction
    from .open_clip import OpenCLIPEmbeddingFunction as OpenCLIPEmbeddingFunction
    from .openai import OpenAIEmbeddingFunction as OpenAIEmbeddingFunction
    from .sentence_transformer import DefaultEmbeddingFunction as DefaultEmbeddingFunction
    from .sentence_transformer import (
        SentenceTransformerEmbeddingFunction as SentenceTransformerEmbeddingFunction,
    )
    from .voyage import VoyageAIEmbeddingFunction as VoyageAIEmbeddingFunction

__all__ = [
    "EmbeddedBatch",
    "ProviderEmbeddingFunction",
    "RateLimiter",
    "from_spec",
    "providers",
    "registered",
    *CLASSES,
]


def __getattr__(name: str) -> Any:
    module = CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def from_spec(
    spec: str,
    *,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
) -> ProviderEmbeddingFunction:
    """Build an embedding function from a CLI spec: ``default``, ``openai:text-embedding-3-small``,
    ``tei:http://host:8080``, ``sentence-transformers:all-MiniLM-L6-v2``, ...

    ``requests_per_minute`` / ``tokens_per_minute`` (the CLI's ``--requests-per-minute`` and
    ``--tokens-per-minute``) set a remote provider's rate limits; an in-process model refuses them.
    """
    ef = _built(spec)
    if requests_per_minute is None and tokens_per_minute is None:
        return ef
    from ..errors import ConfigurationError
    from ._remote import RemoteEmbeddingFunction

    if not isinstance(ef, RemoteEmbeddingFunction):
        raise ConfigurationError(
            f"--model {spec!r} runs in this process: --requests-per-minute and "
            "--tokens-per-minute apply to remote providers only"
        )
    ef.limit_rate(requests_per_minute, tokens_per_minute)
    return ef


def _built(spec: str) -> ProviderEmbeddingFunction:
    from ..errors import ConfigurationError

    provider, _, value = spec.partition(":")
    if spec.startswith("default?"):  # the default's options follow its name: default?device=cuda
        provider, value = "default", spec[len("default") :]
    if provider == "default" and not value:
        return __getattr__("DefaultEmbeddingFunction")()
    classes = providers()
    cls = classes.get(provider)
    if cls is None:
        raise ConfigurationError(
            f"unknown provider {provider!r} in --model {spec!r}; known: {', '.join(sorted(classes))}"
        )
    return cls.from_spec(value)
