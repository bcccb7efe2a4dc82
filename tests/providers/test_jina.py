"""JinaEmbeddingFunction against a loopback server speaking Jina's ``/v1/embeddings`` format.

The fake checks the bearer key, model, input and that ``task`` is one of Jina's; its
vectors depend on model, task, dimensions and (with late chunking) the whole batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.embedding_functions import JinaEmbeddingFunction
from tests.providers import scenarios
from tests.providers.fakes import FakeProvider, serve, tokens_of
from tests.providers.loopback import Request
from tests.providers.scenarios import FAST, TEXTS, Case, same_bits

TASKS = {"retrieval.query", "retrieval.passage", "text-matching", "classification", "separation"}


class JinaFake(FakeProvider):
    key = "jina_test_SECRET_9b3e11d0"
    model = "jina-embeddings-v3"

    def problem(self, request: Request) -> str | None:
        if request.path != "/v1/embeddings":
            return f"unexpected path {request.path}"
        if problem := self.bearer_problem(request):
            return problem
        task = request.body.get("task")
        if task is not None and task not in TASKS:
            return f"task must be one of {sorted(TASKS)}"
        if task is not None and not request.body.get("model", "").startswith("jina-embeddings-v3"):
            return "task is only supported by jina-embeddings-v3"
        return self.field_problems(request, {"model": self.model})

    def salt(self, request: Request) -> str:
        body = request.body
        batch = "|".join(body.get("input") or []) if body.get("late_chunking") else ""
        return f"{body.get('model')}/{body.get('task')}/{body.get('dimensions')}/{batch}"

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        data = self.indexed(vectors, request.body.get("embedding_type") == "base64")
        used = sum(tokens_of(t) for t in texts)
        return {
            "model": self.model,
            "object": "list",
            "usage": {"total_tokens": used, "prompt_tokens": used},
            "data": data,
        }

    def error_body(self, message: str) -> Any:
        return {"detail": message}


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    fake = JinaFake()
    monkeypatch.setenv("JINA_API_KEY", fake.key)
    with serve(fake) as server:

        def make(**overrides: Any) -> JinaEmbeddingFunction:
            return JinaEmbeddingFunction(
                **{"model_name": fake.model, "api_base": server.url, "retry": FAST, **overrides}
            )

        yield Case(fake, server, make, {"task": "retrieval.passage"}, {"task": "retrieval.query"})


class TestJinaContract(scenarios.KeyedProviderContract):
    """The shared provider contract (see :mod:`tests.providers.scenarios`)."""


# -- Jina specifics --------------------------------------------------------------------


def test_task_per_role_for_v3(case: Case) -> None:
    ef = case.make()
    ef(["a"])
    ef.embed_query(["a"])
    assert [r.body["task"] for r in case.server.requests] == [
        "retrieval.passage",
        "retrieval.query",
    ]
    assert ef.cache_identity("document")["task"] == "retrieval.passage"


def test_v2_models_get_no_task(case: Case) -> None:
    case.fake.model = "jina-embeddings-v2-base-en"
    ef = case.make(model_name="jina-embeddings-v2-base-en")
    ef(["a"])
    ef.embed_query(["a"])
    assert all("task" not in r.body for r in case.server.requests)
    assert ef.cache_identity("document") == ef.cache_identity("query")


def test_task_and_query_config_follow_chroma(case: Case) -> None:
    ef = case.make(
        task="text-matching",
        query_config={"task": "retrieval.query"},
        dimensions=64,
        normalized=True,
    )
    ef(["a"])
    ef.embed_query(["a"])
    document, query = (r.body for r in case.server.requests)
    assert (document["task"], query["task"]) == ("text-matching", "retrieval.query")
    assert document["dimensions"] == query["dimensions"] == 64 and document["normalized"] is True
    assert ef.cache_identity("document")["task"] == "text-matching"
    assert ef.cache_identity("query")["task"] == "retrieval.query"


def test_base64_embedding_type_decodes_bit_exact(case: Case) -> None:
    vectors = case.make(embedding_type="base64")(TEXTS)
    assert same_bits(vectors, case.expected(TEXTS))
    assert case.server.requests[-1].body["embedding_type"] == "base64"


def test_late_chunking_bypasses_cache_with_warning(case: Case, sqlite_url: str) -> None:
    ef = case.make(late_chunking=True)
    assert ef.bypass_cache
    cached = Cached(ef, sqlite_url)
    with pytest.warns(UserWarning, match="late chunking"):
        first = cached(TEXTS[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per wrapper, not per call
        second = cached(TEXTS[:3])
    assert case.requests == 2
    assert all(r.body["late_chunking"] is True for r in case.server.requests)
    expected = case.fake.expected(
        TEXTS[:3], task="retrieval.passage", late_chunking=True, input=TEXTS[:3]
    )
    assert same_bits(first, expected) and same_bits(second, expected)
    assert cached.stats()["hits"] == 0


def test_config_round_trip(case: Case) -> None:
    ef = case.make(task="retrieval.passage", dimensions=128, truncate=True)
    config = ef.get_config()
    assert config["api_key_env_var"] == "JINA_API_KEY" and case.fake.key not in str(config)
    assert JinaEmbeddingFunction.build_from_config(config).cache_identity(
        "query"
    ) == ef.cache_identity("query")
