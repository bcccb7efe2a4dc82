"""LangChain: Cached(Embeddings) is an Embeddings; a second indexing run costs no provider call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import BaseModel, PrivateAttr, SecretStr

from cachedembed import Cached, ConfigurationError, InvalidInputError
from cachedembed.adapters.langchain import CachedEmbeddings, cached_embeddings
from cachedembed.stores import close_all
from tests.adapters.conftest import CORPUS, check_namespaces, words_vector


class CountingEmbeddings(Embeddings, BaseModel):
    """A LangChain model shaped like the SDK-backed ones: pydantic fields, a secret, a timeout."""

    model: str = "words-64"
    api_key: SecretStr = SecretStr("sk-test-not-in-any-cache-0123456789")
    request_timeout: float = 30.0
    _calls: list[tuple[str, list[str]]] = PrivateAttr(default_factory=list)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self._calls.append(("documents", list(texts)))
        return [
            words_vector(t + self.model) if self.model != "words-64" else words_vector(t)
            for t in texts
        ]

    def embed_query(self, text: str) -> list[float]:
        self._calls.append(("query", [text]))
        return words_vector(text)

    @property
    def calls(self) -> list[tuple[str, list[str]]]:
        return self._calls


def test_a_second_indexing_run_makes_no_provider_calls_and_search_works(sqlite_url: str) -> None:
    first = CountingEmbeddings()
    store = InMemoryVectorStore.from_texts(CORPUS, embedding=Cached(first, sqlite_url))
    assert first.calls == [("documents", CORPUS)]
    assert store.similarity_search("which trees grow apples", k=1)[0].page_content == CORPUS[0]

    close_all()  # as a new process would: reopen the cache file
    second = CountingEmbeddings()
    store = InMemoryVectorStore.from_texts(CORPUS, embedding=Cached(second, sqlite_url))
    assert second.calls == []
    assert store.similarity_search("snow on the mountains", k=1)[0].page_content == CORPUS[2]
    assert store.similarity_search("which trees grow apples", k=1)[0].page_content == CORPUS[0]
    assert second.calls == [
        ("query", ["snow on the mountains"])
    ]  # the first run's query was cached


def test_vectors_are_the_models_rounded_to_float32_on_miss_and_hit(sqlite_url: str) -> None:
    model = CountingEmbeddings()
    embeddings = cached_embeddings(model, sqlite_url)
    expected = np.asarray(words_vector(CORPUS[1]), dtype=np.float32).tolist()
    miss = embeddings.embed_documents([CORPUS[1]])
    hit = embeddings.embed_documents([CORPUS[1]])
    assert miss == hit == [expected]
    assert all(type(x) is float for x in hit[0])
    assert len(model.calls) == 1


def test_documents_and_queries_are_cached_apart(sqlite_url: str) -> None:
    model = CountingEmbeddings()
    embeddings = Cached(model, sqlite_url)
    embeddings.embed_documents(["same text"])
    embeddings.embed_query("same text")
    embeddings.embed_query("same text")
    assert model.calls == [("documents", ["same text"]), ("query", ["same text"])]
    stats = embeddings.stats()
    assert stats["by_role"]["document"]["misses"] == 1
    assert stats["by_role"]["query"]["misses"] == 1 and stats["by_role"]["query"]["hits"] == 1


def test_only_missing_and_distinct_texts_reach_the_model(sqlite_url: str) -> None:
    model = CountingEmbeddings()
    embeddings = Cached(model, sqlite_url)
    embeddings.embed_documents(["a", "b"])
    out = embeddings.embed_documents(["b", "c", "a", "c"])
    assert model.calls[1:] == [("documents", ["c"])]
    assert out[0] == embeddings.embed_documents(["b"])[0] and out[1] == out[3]


def test_no_documents_is_an_empty_list_without_a_provider_call(sqlite_url: str) -> None:
    model = CountingEmbeddings()
    assert Cached(model, sqlite_url).embed_documents([]) == []
    assert model.calls == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.embed_documents("one string"), "list of str"),
        (lambda e: e.embed_documents(["ok", 3]), r"input\[1\] is int"),
        (lambda e: e.embed_query(["a list"]), "one str"),
    ],
)
def test_bad_input_raises_before_any_provider_call(
    sqlite_url: str, call: object, message: str
) -> None:
    model = CountingEmbeddings()
    with pytest.raises(InvalidInputError, match=message):
        call(Cached(model, sqlite_url))  # type: ignore[operator]
    assert model.calls == []


def test_namespace_comes_from_class_and_fields_without_secrets_or_timeouts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    embeddings = Cached(CountingEmbeddings(), url)
    identity = embeddings.cached.identity("document")
    assert identity["model"] == "words-64"
    assert identity["class"].endswith("test_langchain.CountingEmbeddings")
    assert identity["config"] == {"model": "words-64"}  # no api_key, no request_timeout
    embeddings.embed_documents(CORPUS)

    check_namespaces(
        tmp_path / "c.db",
        lambda e: e.embed_documents(CORPUS),
        same=CountingEmbeddings(request_timeout=5.0),  # a timeout does not change vectors
        other=CountingEmbeddings(model="words-64-v2"),
        secret=b"sk-test-not-in-any-cache",
    )


class Anonymous(Embeddings):
    """Neither pydantic fields nor a model attribute: nothing says which model it is."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [words_vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return words_vector(text)


def test_a_model_without_identity_needs_a_namespace(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="namespace="):
        Cached(Anonymous(), sqlite_url)
    embeddings = Cached(Anonymous(), sqlite_url, namespace="words-64 v1")
    assert embeddings.embed_query("x") == np.asarray(words_vector("x"), np.float32).tolist()


def test_wrapping_twice_is_refused(sqlite_url: str) -> None:
    embeddings = Cached(CountingEmbeddings(), sqlite_url)
    assert isinstance(embeddings, CachedEmbeddings) and isinstance(embeddings, Embeddings)
    with pytest.raises(ConfigurationError, match="already cached"):
        Cached(embeddings, sqlite_url)


async def test_async_methods_share_the_cache_with_sync_ones(sqlite_url: str) -> None:
    model = CountingEmbeddings()
    embeddings = Cached(model, sqlite_url)
    docs = await embeddings.aembed_documents(CORPUS[:2])
    query = await embeddings.aembed_query("fish")
    assert embeddings.embed_documents(CORPUS[:2]) == docs
    assert embeddings.embed_query("fish") == query
    assert await embeddings.aembed_documents([]) == []
    assert len(model.calls) == 2


def test_session_stats_count_this_objects_calls_and_stats_the_caches_lifetime(
    sqlite_url: str,
) -> None:
    earlier = Cached(CountingEmbeddings(), sqlite_url)
    earlier.embed_documents(CORPUS[:2])
    embeddings = Cached(CountingEmbeddings(), sqlite_url)
    embeddings.embed_documents(CORPUS[:3])
    embeddings.embed_query("fish")
    mine = embeddings.session_stats()
    assert (mine["hits"], mine["misses"], mine["by_role"]["query"]["misses"]) == (2, 2, 1)
    assert (embeddings.stats()["hits"], embeddings.stats()["misses"]) == (2, 4)
