"""A Chroma collection keeps the model its vectors came from, wrapped in ``Cached`` or not.

``collection.modify(configuration={"embedding_function": ...})`` runs the new function's
``validate_config_update``. Through ``Cached`` that is the wrapped function's own check
(Chroma's OpenAI function refuses a model change), and then the cache's: a change of
anything that names the cache namespace is refused, since the collection's vectors and
the new model's would mix.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import chromadb
import pytest
from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction as ChromaOpenAI

from cachedembed import Cached
from cachedembed.embedding_functions import OpenAIEmbeddingFunction


@pytest.fixture
def client(tmp_path: Path) -> chromadb.ClientAPI:
    return chromadb.PersistentClient(path=str(tmp_path / "chroma"))


def _modify(client: chromadb.ClientAPI, first: object, second: object) -> None:
    col = client.create_collection(f"docs-{uuid.uuid4().hex[:8]}", embedding_function=first)  # type: ignore[arg-type]
    col.modify(configuration={"embedding_function": second})  # type: ignore[typeddict-item]


def test_the_wrapped_functions_own_guard_still_refuses_a_model_change(
    client: chromadb.ClientAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHROMA_OPENAI_API_KEY", "sk-test-not-used")
    with pytest.raises(ValueError, match="model name cannot be changed"):
        _modify(
            client,
            ChromaOpenAI(model_name="text-embedding-3-small"),
            ChromaOpenAI(model_name="text-embedding-3-large"),
        )
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    with pytest.raises(ValueError, match="model name cannot be changed"):
        _modify(
            client,
            Cached(ChromaOpenAI(model_name="text-embedding-3-small"), cache),
            Cached(ChromaOpenAI(model_name="text-embedding-3-large"), cache),
        )


def test_a_change_of_the_cache_namespace_is_refused_naming_the_option(
    client: chromadb.ClientAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    model = "text-embedding-3-small"
    with pytest.raises(ValueError, match=r"cannot change 'dimensions'.*create a new collection"):
        _modify(
            client,
            Cached(OpenAIEmbeddingFunction(model_name=model, dimensions=256), cache),
            Cached(OpenAIEmbeddingFunction(model_name=model, dimensions=512), cache),
        )
    with pytest.raises(ValueError, match="cannot change 'dtype'"):
        _modify(
            client,
            Cached(OpenAIEmbeddingFunction(model_name=model), cache),
            Cached(OpenAIEmbeddingFunction(model_name=model), cache, dtype="float16"),
        )
    with pytest.raises(ValueError, match="cannot change 'namespace'"):
        _modify(
            client,
            Cached(OpenAIEmbeddingFunction(model_name=model), cache, namespace="a"),
            Cached(OpenAIEmbeddingFunction(model_name=model), cache, namespace="b"),
        )


def test_a_change_that_keeps_the_namespace_is_accepted(
    client: chromadb.ClientAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    model = "text-embedding-3-small"
    _modify(
        client,
        Cached(OpenAIEmbeddingFunction(model_name=model), cache, batch_size=64),
        Cached(
            OpenAIEmbeddingFunction(model_name=model, organization_id="org-2"),
            cache,
            batch_size=128,
        ),
    )
