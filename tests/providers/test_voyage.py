"""VoyageAIEmbeddingFunction against a loopback server speaking Voyage's ``/v1/embeddings`` format.

The fake checks the bearer key, model, ``input_type`` (null, query or document), the
1,000-input limit and non-empty texts; its vectors depend on model, input type and
``output_dimension``. Errors are ``{"detail": ...}`` as Voyage sends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import InvalidInputError
from cachedembed.embedding_functions import VoyageAIEmbeddingFunction
from cachedembed.embedding_functions.voyage import token_cap
from tests.providers import scenarios
from tests.providers.fakes import FakeProvider, serve, tokens_of
from tests.providers.loopback import Request
from tests.providers.scenarios import FAST, TEXTS, Case, same_bits


class VoyageFake(FakeProvider):
    key = "pa-test-SECRET-77c0ffee"
    model = "voyage-3.5"

    def problem(self, request: Request) -> str | None:
        if request.path != "/v1/embeddings":
            return f"unexpected path {request.path}"
        if problem := self.bearer_problem(request):
            return problem
        body = request.body
        if body.get("input_type") not in (None, "query", "document"):
            return "input_type must be null, 'query' or 'document'"
        if len(body.get("input", [])) > 1000:
            return "The maximum length of the list is 1000"
        if any(t == "" for t in body.get("input", [])):
            return "Input texts must be non-empty"
        return self.field_problems(request, {"model": self.model})

    def salt(self, request: Request) -> str:
        body = request.body
        return f"{body.get('model')}/{body.get('input_type')}/{body.get('output_dimension')}"

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        return {
            "object": "list",
            "data": self.indexed(vectors),
            "model": self.model,
            "usage": {"total_tokens": sum(tokens_of(t) for t in texts)},
        }

    def error_body(self, message: str) -> Any:
        return {"detail": message}


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    fake = VoyageFake()
    monkeypatch.setenv("VOYAGE_API_KEY", fake.key)
    with serve(fake) as server:

        def make(**overrides: Any) -> VoyageAIEmbeddingFunction:
            return VoyageAIEmbeddingFunction(
                **{"model_name": fake.model, "api_base": server.url, "retry": FAST, **overrides}
            )

        yield Case(fake, server, make, {"input_type": "document"}, {"input_type": "query"})


class TestVoyageContract(scenarios.KeyedProviderContract):
    """The shared provider contract (see :mod:`tests.providers.scenarios`)."""


# -- Voyage specifics ------------------------------------------------------------------


def test_input_type_per_role_truncation_on(case: Case) -> None:
    ef = case.make()
    ef(["a"])
    ef.embed_query(["a"])
    assert [r.body["input_type"] for r in case.server.requests] == ["document", "query"]
    assert all(r.body["truncation"] is True for r in case.server.requests)


def test_documented_limits() -> None:
    assert VoyageAIEmbeddingFunction.max_batch == 1000
    assert token_cap("voyage-3.5-lite") == token_cap("voyage-4-lite") == 1_000_000
    assert token_cap("voyage-3.5") == token_cap("voyage-3") == token_cap("voyage-4") == 320_000
    assert (
        token_cap("voyage-3-large")
        == token_cap("voyage-code-3")
        == token_cap("voyage-law-2")
        == 120_000
    )
    assert token_cap("some-future-model") == 120_000


def test_thousand_and_one_texts_go_in_two_requests(case: Case) -> None:
    texts = [f"t{i}" for i in range(1001)]
    assert same_bits(case.make()(texts), case.expected(texts))
    assert [len(b) for b in case.fake.batches] == [1000, 1]


def test_token_cap_splits_batches(case: Case) -> None:
    ef = case.make()
    ef.max_batch_tokens = 8
    texts = [f"twelve bytes{i}"[:12] for i in range(5)]
    ef(texts)
    assert [len(b) for b in case.fake.batches] == [2, 2, 1]


def test_explicit_input_type_and_output_dimension(case: Case) -> None:
    ef = case.make(input_type="document", output_dimension=256)
    ef.embed_query(["q"])
    body = case.server.requests[-1].body
    assert body["input_type"] == "document" and body["output_dimension"] == 256
    assert ef.cache_identity("query")["input_type"] == "document"
    assert ef.cache_identity("query")["output_dimension"] == 256


def test_empty_string_rejected_before_any_request(case: Case) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        case.make()([""])
    assert case.requests == 0


def test_config_round_trip(case: Case) -> None:
    ef = case.make(output_dimension=512, truncation=False)
    config = ef.get_config()
    assert config["api_key_env_var"] == "VOYAGE_API_KEY" and case.fake.key not in str(config)
    assert VoyageAIEmbeddingFunction.build_from_config(config).cache_identity(
        "document"
    ) == ef.cache_identity("document")


def test_chroma_collection_persists_and_rebuilds_it(case: Case, tmp_path: Path) -> None:
    """A real Chroma collection stores the function's config (no key) and rebuilds it on reopen."""
    import chromadb

    from cachedembed import Cached

    cache = f"sqlite:///{tmp_path / 'cache.db'}"
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    original = Cached(case.make(), cache)
    collection = client.create_collection("docs", embedding_function=original)  # type: ignore[arg-type]
    collection.add(ids=["1", "2"], documents=TEXTS[:2])
    assert [r.body["input_type"] for r in case.server.requests] == ["document"]

    reopened = chromadb.PersistentClient(path=str(tmp_path / "chroma")).get_collection("docs")
    result = reopened.query(query_texts=[TEXTS[0]], n_results=1)
    assert case.server.requests[-1].body["input_type"] == "query"
    assert len(result["ids"][0]) == 1
    rebuilt = reopened.configuration.get("embedding_function")
    assert isinstance(rebuilt, Cached) and rebuilt is not original
    assert rebuilt.ef.cache_identity("query") == original.ef.cache_identity("query")
    stored = json.dumps(reopened.configuration_json)
    assert "cachedembed" in stored and case.fake.key not in stored
