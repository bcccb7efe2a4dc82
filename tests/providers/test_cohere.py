"""CohereEmbeddingFunction: the real cohere SDK against a loopback server speaking Cohere's embed API.

The fake checks what the SDK sends (bearer key, model, ``texts`` of at most 96,
``input_type`` per role, ``embedding_types``, ``truncate``, ``output_dimension``) and
answers as Cohere documents: v2 ``embeddings.float``; v1 ``embeddings_floats`` or
``embeddings_by_type``; tokens in ``meta.billed_units.input_tokens``; ``{"message"}`` errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached, ConfigurationError
from cachedembed.embedding_functions import CohereEmbeddingFunction, from_spec
from tests.conftest import fake_vector
from tests.providers.fakes import DIM, FakeProvider, tokens_of
from tests.providers.loopback import Request
from tests.providers.scenarios import FAST, TEXTS, Case, KeyedProviderContract, same_bits, serving

INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")


class CohereFake(FakeProvider):
    """POST /v2/embed (or /v1/embed) as Cohere documents it."""

    key = "co-test-SECRET-8d1e5b07"
    model = "embed-english-v3.0"
    version = "v2"
    v1_shape = "embeddings_floats"
    """What a v1 server answers when no ``embedding_types`` is asked for."""

    def problem(self, request: Request) -> str | None:
        if request.path != f"/{self.version}/embed":
            return f"unexpected path {request.path}"
        if problem := self.bearer_problem(request):
            return problem
        body = request.body
        if body.get("model") != self.model:
            return f"model {body.get('model')!r} not found"
        if body.get("input_type") not in INPUT_TYPES:
            return f"invalid input_type {body.get('input_type')!r}"
        if len(body.get("texts") or []) > 96:
            return "invalid request: total number of texts must be at most 96"
        if self.version == "v2":
            if body.get("embedding_types") != ["float"]:
                return f"expected embedding_types ['float'], got {body.get('embedding_types')!r}"
        elif "output_dimension" in body:
            return "unknown field: output_dimension"
        if body.get("truncate") not in (None, "NONE", "START", "END"):
            return "invalid truncate"
        return None

    def texts(self, request: Request) -> list[str]:
        return list(request.body["texts"])

    def salt(self, request: Request) -> str:
        body = request.body
        return f"{body.get('model')}/{body.get('input_type')}/{body.get('truncate')}/{body.get('output_dimension')}"

    def vector(self, text: str, request: Request) -> np.ndarray:
        return fake_vector(text, request.body.get("output_dimension") or DIM, self.salt(request))

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        floats = [[float(x) for x in v] for v in vectors]
        meta = {
            "api_version": {"version": self.version[1:]},
            "billed_units": {"input_tokens": sum(tokens_of(t) for t in texts)},
        }
        by_type = (
            self.version == "v2"
            or request.body.get("embedding_types")
            or self.v1_shape == "embeddings_by_type"
        )
        if by_type:
            return {
                "id": "emb-1",
                "response_type": "embeddings_by_type",
                "embeddings": {"float": floats},
                "texts": texts,
                "meta": meta,
            }
        return {
            "id": "emb-1",
            "response_type": "embeddings_floats",
            "embeddings": floats,
            "texts": texts,
            "meta": meta,
        }

    def error_body(self, message: str) -> Any:
        return {"message": message}


def start(fake: CohereFake, monkeypatch: pytest.MonkeyPatch, **defaults: Any) -> Iterator[Case]:
    monkeypatch.setenv("CO_API_KEY", fake.key)
    monkeypatch.delenv("CO_API_URL", raising=False)
    options = lambda url: {"model_name": fake.model, "api_base": url, **defaults}  # noqa: E731
    with serving(
        fake,
        CohereEmbeddingFunction,
        options,
        {"input_type": "search_document"},
        {"input_type": "search_query"},
    ) as case:
        yield case


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    yield from start(CohereFake(), monkeypatch)


class TestCohereContract(KeyedProviderContract):
    """The behaviour every network provider shares (tests/providers/scenarios.py)."""


# -- Cohere specifics ------------------------------------------------------------------


def test_queries_are_search_query_documents_search_document(case: Case) -> None:
    ef = case.make()
    ef(["doc"])
    ef.embed_query(["question"])
    assert [r.body["input_type"] for r in case.server.requests] == [
        "search_document",
        "search_query",
    ]
    assert all(r.body["embedding_types"] == ["float"] for r in case.server.requests)


def test_96_texts_per_request_in_order(case: Case) -> None:
    texts = [f"passage {i}" for i in range(200)]
    vectors = case.make()(texts)
    assert [len(b) for b in case.fake.batches] == [96, 96, 8]
    assert same_bits(vectors, case.expected(texts))


@pytest.mark.parametrize("shape", ["embeddings_floats", "embeddings_by_type"])
def test_v1_api_both_response_shapes(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, shape: str
) -> None:
    for case in start(CohereFake(version="v1", v1_shape=shape), monkeypatch, api_version="v1"):
        cached = Cached(case.make(), sqlite_url)
        assert same_bits(cached(TEXTS), case.expected(TEXTS))
        assert same_bits(cached.embed_query(TEXTS[:1]), case.expected(TEXTS[:1], "query"))
        request = case.server.requests[0]
        assert request.path == "/v1/embed" and "embedding_types" not in request.body
        assert cached.stats()["tokens_embedded"] == sum(tokens_of(t) for t in [*TEXTS, TEXTS[0]])


def test_output_dimension_and_truncate_sent_and_in_namespace(case: Case, sqlite_url: str) -> None:
    ef = case.make(model_name="embed-v4.0", output_dimension=256, truncate="START")
    case.fake.model = "embed-v4.0"
    vectors = Cached(ef, sqlite_url)(TEXTS[:2])
    body = case.server.requests[-1].body
    assert body["output_dimension"] == 256 and body["truncate"] == "START"
    fields = {"input_type": "search_document", "truncate": "START", "output_dimension": 256}
    assert same_bits(vectors, case.fake.expected(TEXTS[:2], **fields))
    assert np.stack(vectors).shape == (2, 256)
    identity = ef.cache_identity("document")
    assert identity == {
        "provider": "cohere",
        "model": "embed-v4.0",
        "input_type": "search_document",
        "truncate": "START",
        "output_dimension": 256,
        "api_base": case.server.url,
    }
    assert ef.cache_identity("query")["input_type"] == "search_query"


def test_explicit_input_type_used_for_both_roles(case: Case) -> None:
    ef = case.make(input_type="clustering")
    ef(["a"])
    ef.embed_query(["b"])
    assert [r.body["input_type"] for r in case.server.requests] == ["clustering", "clustering"]


def test_key_and_server_from_environment(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO_API_KEY")
    monkeypatch.setenv("COHERE_API_KEY", case.fake.key)
    monkeypatch.setenv("CO_API_URL", case.server.url)
    ef = CohereEmbeddingFunction(model_name=case.fake.model, retry=FAST)
    assert same_bits(ef(TEXTS[:2]), case.expected(TEXTS[:2]))


def test_bad_options_rejected_before_any_request() -> None:
    with pytest.raises(ConfigurationError, match="truncate"):
        CohereEmbeddingFunction(api_key="k", truncate="MIDDLE")
    with pytest.raises(ConfigurationError, match="v2"):
        CohereEmbeddingFunction(api_key="k", api_version="v1", output_dimension=256)


def test_spec_and_config_round_trip_without_secrets(case: Case) -> None:
    ef = from_spec("cohere:embed-english-v3.0")
    assert isinstance(ef, CohereEmbeddingFunction) and ef.model_name == "embed-english-v3.0"
    ef = case.make(output_dimension=512)
    config = ef.get_config()
    assert case.fake.key not in repr(config) and config["api_key_env_var"] == "CO_API_KEY"
    rebuilt = CohereEmbeddingFunction.build_from_config(config)
    assert rebuilt.cache_identity("query") == ef.cache_identity("query")


def test_chroma_collection_rebuilt_from_config_queries_as_search_query(
    case: Case, tmp_path: Path
) -> None:
    """Chroma persists the Cached Cohere function by name and config (no key) and rebuilds it for queries."""
    import chromadb

    cache = f"sqlite:///{tmp_path / 'cache.db'}"
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    col = client.create_collection("docs", embedding_function=Cached(case.make(), cache))  # type: ignore[arg-type]
    col.add(ids=["1", "2"], documents=["Paris is in France", "Rome is in Italy"])
    assert case.fake.key not in json.dumps(col.configuration_json)
    reopened = chromadb.PersistentClient(path=str(tmp_path / "chroma")).get_collection("docs")
    found = reopened.query(query_texts=["Where is Paris?"], n_results=1)
    assert len(found["ids"][0]) == 1  # fake vectors: which one is nearest means nothing
    assert [r.body["input_type"] for r in case.server.requests] == [
        "search_document",
        "search_query",
    ]
    reopened.add(ids=["3"], documents=["Paris is in France"])  # already cached: no request
    assert len(case.server.requests) == 2
