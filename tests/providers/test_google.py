"""Gemini embedding functions: the real google-genai SDK against a loopback ``batchEmbedContents`` server.

The fake checks what the SDK sends (``x-goog-api-key``, the v1beta path with the model,
one request per text with ``models/{model}``, ``taskType`` per role,
``outputDimensionality``, at most 100 requests) and answers as Gemini documents:
``{"embeddings": [{"values": [...]}]}`` in order, no usage, ``{"error": {code, message,
status}}`` errors. Tokens are therefore estimated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.embedding_functions import (
    GoogleGeminiEmbeddingFunction,
    GoogleGenerativeAiEmbeddingFunction,
    from_spec,
)
from tests.conftest import fake_vector
from tests.providers.fakes import DIM, FakeProvider
from tests.providers.loopback import Request
from tests.providers.scenarios import FAST, TEXTS, Case, KeyedProviderContract, same_bits, serving

TASKS = {
    "RETRIEVAL_DOCUMENT",
    "RETRIEVAL_QUERY",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
}


class GeminiFake(FakeProvider):
    """POST /v1beta/models/{model}:batchEmbedContents as the Gemini API documents it."""

    key = "AIza-test-SECRET-5c3f9e12"
    model = "gemini-embedding-001"

    def problem(self, request: Request) -> str | None:
        if request.path != f"/v1beta/models/{self.model}:batchEmbedContents":
            return f"unexpected path {request.path}"
        if request.headers.get("x-goog-api-key") != self.key:
            return "API key not valid. Please pass a valid API key."
        items = request.body.get("requests")
        if not isinstance(items, list) or not items:
            return "requests must be a non-empty list"
        if len(items) > 100:
            return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
        for i, item in enumerate(items):
            if item.get("model") != f"models/{self.model}":
                return f"requests[{i}].model {item.get('model')!r} differs from the URL's model"
            if item.get("taskType") not in TASKS:
                return f"requests[{i}].taskType {item.get('taskType')!r} is invalid"
            if (item.get("taskType"), item.get("outputDimensionality")) != (
                items[0].get("taskType"),
                items[0].get("outputDimensionality"),
            ):
                return "the fake expects one task and dimension per batch"
        return None

    def texts(self, request: Request) -> list[str]:
        return [item["content"]["parts"][0]["text"] for item in request.body["requests"]]

    def fields(self, request: Request) -> dict[str, Any]:
        body = request.body
        return body["requests"][0] if "requests" in body else body

    def salt(self, request: Request) -> str:
        fields = self.fields(request)
        return f"{self.model}/{fields.get('taskType')}/{fields.get('outputDimensionality')}"

    def vector(self, text: str, request: Request) -> np.ndarray:
        return fake_vector(
            text, self.fields(request).get("outputDimensionality") or DIM, self.salt(request)
        )

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        return {"embeddings": [{"values": [float(x) for x in v]} for v in vectors]}

    def error_body(self, message: str) -> Any:
        return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    fake = GeminiFake()
    monkeypatch.setenv("GEMINI_API_KEY", fake.key)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    options = lambda url: {"model_name": fake.model, "api_base": url}  # noqa: E731
    with serving(
        fake,
        GoogleGeminiEmbeddingFunction,
        options,
        {"taskType": "RETRIEVAL_DOCUMENT"},
        {"taskType": "RETRIEVAL_QUERY"},
    ) as case:
        yield case


class TestGeminiContract(KeyedProviderContract):
    """The behaviour every network provider shares; Gemini reports no tokens, so they are estimated."""

    reports_tokens = False


# -- Gemini specifics ------------------------------------------------------------------


def test_100_texts_per_batch_in_order(case: Case) -> None:
    texts = [f"passage {i}" for i in range(250)]
    vectors = case.make()(texts)
    assert [len(b) for b in case.fake.batches] == [100, 100, 50]
    assert same_bits(vectors, case.expected(texts))


def test_task_type_per_role_unless_configured(case: Case) -> None:
    ef = case.make()
    ef(["doc"])
    ef.embed_query(["question"])
    fixed = case.make(task_type="SEMANTIC_SIMILARITY")
    fixed(["doc"])
    fixed.embed_query(["question"])
    tasks = [r.body["requests"][0]["taskType"] for r in case.server.requests]
    assert tasks == [
        "RETRIEVAL_DOCUMENT",
        "RETRIEVAL_QUERY",
        "SEMANTIC_SIMILARITY",
        "SEMANTIC_SIMILARITY",
    ]
    assert ef.cache_identity("query")["task_type"] == "RETRIEVAL_QUERY"
    assert fixed.cache_identity("query")["task_type"] == "SEMANTIC_SIMILARITY"


def test_dimension_sent_checked_and_in_namespace(case: Case, sqlite_url: str) -> None:
    ef = case.make(dimension=16)
    vectors = Cached(ef, sqlite_url)(TEXTS[:3])
    assert case.server.requests[-1].body["requests"][0]["outputDimensionality"] == 16
    assert np.stack(vectors).shape == (3, 16)
    assert same_bits(
        vectors,
        case.fake.expected(TEXTS[:3], taskType="RETRIEVAL_DOCUMENT", outputDimensionality=16),
    )
    assert ef.cache_identity("document") == {
        "provider": "gemini",
        "model": case.fake.model,
        "task_type": "RETRIEVAL_DOCUMENT",
        "dimension": 16,
        "api_base": case.server.url,
    }


def test_generative_ai_name_same_calls_and_config(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", case.fake.key)
    ef = GoogleGenerativeAiEmbeddingFunction(
        model_name=case.fake.model, api_base=case.server.url, retry=FAST
    )
    assert same_bits(ef(TEXTS), case.expected(TEXTS))
    assert same_bits(ef.embed_query(TEXTS[:1]), case.expected(TEXTS[:1], "query"))
    config = ef.get_config()
    assert case.fake.key not in repr(config) and "vertexai" not in config
    assert GoogleGenerativeAiEmbeddingFunction.build_from_config(config).cache_identity(
        "document"
    ) == ef.cache_identity("document")
    assert ef.name() == "cachedembed-google-generative-ai" != GoogleGeminiEmbeddingFunction.name()


def test_each_gemini_class_round_trips_as_itself_with_one_namespace() -> None:
    # Its own Chroma name rebuilds the older class; configs persisted under the shared name
    # before (cachedembed-gemini) still rebuild, and both name the same cached vectors.
    from cachedembed.embedding_functions import registered

    old = GoogleGenerativeAiEmbeddingFunction(api_key="k", task_type="CLASSIFICATION", dimension=8)
    assert registered(old.name()) is GoogleGenerativeAiEmbeddingFunction
    assert registered("cachedembed-gemini") is GoogleGeminiEmbeddingFunction
    for cls in (GoogleGenerativeAiEmbeddingFunction, GoogleGeminiEmbeddingFunction):
        rebuilt = cls.build_from_config({**old.get_config(), "api_key": "k"})
        assert rebuilt.cache_identity("query") == old.cache_identity("query")


def test_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    ef = from_spec("gemini:gemini-embedding-001")
    assert isinstance(ef, GoogleGeminiEmbeddingFunction) and ef.model_name == "gemini-embedding-001"
