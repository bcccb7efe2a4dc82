"""LlamaIndex: Cached(BaseEmbedding) is a BaseEmbedding; re-indexing costs no provider call."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from pydantic import PrivateAttr

from cachedembed import Cached, ConfigurationError
from cachedembed.adapters.llamaindex import CachedEmbedding, cached_embed_model
from cachedembed.stores import close_all, open_store
from tests.adapters.conftest import CORPUS, check_namespaces, words_vector
from tests.stores.servers import postgres_database


class CountingEmbedding(BaseEmbedding):
    """A deterministic LlamaIndex embed model that records what reaches it."""

    model_name: str = "words-256"
    api_key: str = "sk-llama-not-in-any-cache-9876543210"
    _calls: list[tuple[str, list[str]]] = PrivateAttr(default_factory=list)

    def _get_query_embedding(self, query: str) -> list[float]:
        self._calls.append(("query", [query]))
        return words_vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        self._calls.append(("texts", list(texts)))
        return [words_vector(t) for t in texts]

    @property
    def calls(self) -> list[tuple[str, list[str]]]:
        return self._calls


def documents() -> list[Document]:
    return [Document(text=text, id_=f"doc-{i}") for i, text in enumerate(CORPUS)]


def test_a_second_indexing_run_makes_no_provider_calls_and_retrieval_works(sqlite_url: str) -> None:
    first = CountingEmbedding()
    index = VectorStoreIndex.from_documents(documents(), embed_model=Cached(first, sqlite_url))
    assert sorted(t for kind, texts in first.calls for t in texts) == sorted(CORPUS)
    nodes = index.as_retriever(similarity_top_k=1).retrieve("a violin with strings")
    assert nodes[0].node.get_content() == CORPUS[3]

    close_all()  # as a new process would: reopen the cache file
    second = CountingEmbedding()
    index = VectorStoreIndex.from_documents(documents(), embed_model=Cached(second, sqlite_url))
    assert second.calls == []
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=1).query("bread from the oven")
    assert response.source_nodes[0].node.get_content() == CORPUS[4]
    nodes = index.as_retriever(similarity_top_k=1).retrieve("a violin with strings")
    assert nodes[0].node.get_content() == CORPUS[3]
    assert second.calls == [("query", ["bread from the oven"])]  # the violin query was cached


def test_each_text_is_cached_on_its_own(sqlite_url: str) -> None:
    model = CountingEmbedding()
    embed = Cached(model, sqlite_url)
    embed.get_text_embedding_batch(["a", "b", "c"])
    out = embed.get_text_embedding_batch(["c", "d", "a", "d"])
    assert model.calls[1:] == [("texts", ["d"])]
    assert out[0] == embed.get_text_embedding("c") and out[1] == out[3]
    assert out[1] == np.asarray(words_vector("d"), np.float32).tolist()


def test_texts_and_queries_are_cached_apart(sqlite_url: str) -> None:
    model = CountingEmbedding()
    embed = Cached(model, sqlite_url)
    embed.get_text_embedding("same")
    embed.get_query_embedding("same")
    embed.get_query_embedding("same")
    assert model.calls == [("texts", ["same"]), ("query", ["same"])]
    assert embed.stats()["by_role"]["query"]["hits"] == 1


def test_batching_settings_are_the_inner_models(sqlite_url: str) -> None:
    inner = CountingEmbedding(embed_batch_size=2, num_workers=3)
    embed = cached_embed_model(inner, sqlite_url)
    assert isinstance(embed, CachedEmbedding) and isinstance(embed, BaseEmbedding)
    assert (embed.model_name, embed.embed_batch_size, embed.num_workers) == ("words-256", 2, 3)
    embed.get_text_embedding_batch(CORPUS)
    assert [texts for _, texts in inner.calls] == [CORPUS[0:2], CORPUS[2:4], CORPUS[4:5]]


def test_namespace_comes_from_model_name_and_fields_without_secrets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    embed = Cached(CountingEmbedding(), url)
    identity = embed.cached.identity("document")
    assert identity["model"] == "words-256"
    assert "api_key" not in identity["config"] and "embed_batch_size" not in identity["config"]
    embed.get_text_embedding_batch(CORPUS)

    check_namespaces(
        tmp_path / "c.db",
        lambda e: e.get_text_embedding_batch(CORPUS),
        same=CountingEmbedding(embed_batch_size=3),  # batching does not change vectors
        other=CountingEmbedding(model_name="words-256-v2"),
        secret=b"sk-llama-not-in-any-cache",
    )


def test_wrapping_twice_is_refused(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="already cached"):
        Cached(Cached(CountingEmbedding(), sqlite_url), sqlite_url)


async def test_async_methods_share_the_cache_with_sync_ones(sqlite_url: str) -> None:
    model = CountingEmbedding()
    embed = Cached(model, sqlite_url)
    texts = await embed.aget_text_embedding_batch(CORPUS[:3])
    one = await embed.aget_text_embedding(CORPUS[3])
    query = await embed.aget_query_embedding("fish")
    assert embed.get_text_embedding_batch(CORPUS[:4]) == [*texts, one]
    assert embed.get_query_embedding("fish") == query
    # Each text reached the model once, through its own async methods (a model without a
    # batched `_aget_text_embeddings` gets LlamaIndex's default: one call per text).
    assert sorted(t for kind, texts in model.calls if kind == "texts" for t in texts) == sorted(
        CORPUS[:4]
    )
    assert [texts for kind, texts in model.calls if kind == "query"] == [["fish"]]


def test_session_stats_count_this_objects_calls_and_stats_the_caches_lifetime(
    sqlite_url: str,
) -> None:
    earlier = Cached(CountingEmbedding(), sqlite_url)
    earlier.get_text_embedding_batch(CORPUS[:2])
    embed = Cached(CountingEmbedding(), sqlite_url)
    embed.get_text_embedding_batch(CORPUS[:3])
    embed.get_query_embedding("fish")
    mine = embed.session_stats()
    assert (mine["hits"], mine["misses"], mine["by_role"]["query"]["misses"]) == (2, 2, 1)
    assert (embed.stats()["hits"], embed.stats()["misses"]) == (2, 4)


def ingest(url: str) -> list[list[float]]:
    """One run of a real multi-process ``IngestionPipeline`` over the corpus; the vectors of its nodes."""
    pipeline = IngestionPipeline(
        # str.split: the default tiktoken tokenizer reloads its files from the internet in each worker
        transformations=[
            SentenceSplitter(chunk_size=32, chunk_overlap=0, tokenizer=str.split),
            Cached(CountingEmbedding(), url),
        ]
    )
    nodes = pipeline.run(documents=documents(), num_workers=2)
    return [
        node.embedding for node in sorted(nodes, key=lambda n: n.get_content()) if node.embedding
    ]


@pytest.mark.timeout(300)  # a worker that cannot unpickle its transformations hangs the pool
def test_an_ingestion_pipeline_with_worker_processes_reuses_the_cache(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pipeline.db'}"
    first = ingest(url)
    counted = Cached(
        CountingEmbedding(), url
    ).stats()  # the workers are other processes: count in the cache
    assert counted["misses"] == len(CORPUS) == len(first) and counted["hits"] == 0
    assert first == [np.asarray(words_vector(t), np.float32).tolist() for t in sorted(CORPUS)]

    second = ingest(url)
    stats = Cached(CountingEmbedding(), url).stats()
    assert stats["provider_calls"] == counted["provider_calls"] and stats["misses"] == len(CORPUS)
    assert stats["hits"] == len(CORPUS)  # workers publish their counters before the pool ends them
    assert second == first


def test_a_pickled_model_reopens_its_cache_and_keeps_its_namespace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    embed = Cached(CountingEmbedding(), url, namespace="words", dtype="float16")
    vector = embed.get_text_embedding(CORPUS[0])
    copy = pickle.loads(pickle.dumps(embed))
    assert copy.cached is not embed.cached and copy.cached.store.url == embed.cached.store.url
    assert (copy.cached.namespace, copy.cached.dtype) == ("words", "float16")
    assert copy.get_text_embedding(CORPUS[0]) == vector
    assert copy.inner.calls == [] and copy.session_stats()["hits"] == 1


def test_a_cache_that_cannot_be_reopened_elsewhere_refuses_to_pickle(sqlite_url: str) -> None:
    with pytest.raises(pickle.PicklingError, match=r"memory:// cache lives in one process"):
        pickle.dumps(Cached(CountingEmbedding(), "memory://"))
    with postgres_database() as url:  # a database of its own: the shared one may be migrated
        store = open_store(url.replace("postgres@", "postgres:s3cret-pw@"))  # trust ignores it
        try:
            with pytest.raises(
                pickle.PicklingError, match="password is masked; pass the URL instead"
            ) as error:
                pickle.dumps(Cached(CountingEmbedding(), store, namespace="words"))
        finally:
            close_all()
    assert "s3cret-pw" not in str(error.value)


def test_rebuilding_from_to_dict_is_refused_with_the_way_that_works(sqlite_url: str) -> None:
    embed = Cached(CountingEmbedding(), sqlite_url)
    assert embed.to_dict()["class_name"] == "CachedEmbedding"
    with pytest.raises(
        ConfigurationError, match=r"cannot be rebuilt from to_dict\(\).*Cached\(model, cache\)"
    ):
        CachedEmbedding.from_dict(embed.to_dict())
    with pytest.raises(ConfigurationError, match="cannot be rebuilt"):
        CachedEmbedding.from_json(embed.to_json())
