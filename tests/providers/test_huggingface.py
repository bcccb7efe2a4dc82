"""HuggingFaceEmbeddingFunction against a loopback server speaking the Inference Providers feature-extraction API.

The fake checks the router path (``/models/{model}/pipeline/feature-extraction``), the
bearer token, ``x-wait-for-model: true`` and the ``inputs`` list, and answers with a bare
list of vectors (no usage, so tokens are estimated), ``{"error": ...}`` errors, and the
503 "model is currently loading" body with ``estimated_time``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cachedembed import ProviderError
from cachedembed.embedding_functions import HuggingFaceEmbeddingFunction, from_spec
from cachedembed.embedding_functions.huggingface import ROUTER_URL
from tests.providers.fakes import FakeProvider
from tests.providers.loopback import Reply, Request
from tests.providers.scenarios import TEXTS, Case, KeyedProviderContract, same_bits, serving


class FeatureExtractionFake(FakeProvider):
    """POST {inputs, normalize?, truncate?} -> [[...], ...], as HF's feature-extraction task documents it."""

    key = "hf_testSECRET3b8d0c55a1"
    model = "BAAI/bge-small-en-v1.5"

    def problem(self, request: Request) -> str | None:
        if request.path != f"/models/{self.model}/pipeline/feature-extraction":
            return f"unexpected path {request.path}"
        if problem := self.bearer_problem(request):
            return problem
        if request.headers.get("x-wait-for-model") != "true":
            return "expected x-wait-for-model: true"
        return None

    def texts(self, request: Request) -> list[str]:
        return list(request.body["inputs"])

    def salt(self, request: Request) -> str:
        return f"{self.model}/{request.body.get('normalize')}/{request.body.get('truncate')}"

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        return [[float(x) for x in v] for v in vectors]

    def error_body(self, message: str) -> Any:
        return {"error": message}


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    fake = FeatureExtractionFake()
    monkeypatch.setenv("HF_TOKEN", fake.key)
    with serving(
        fake, HuggingFaceEmbeddingFunction, lambda url: {"model_name": fake.model, "api_base": url}
    ) as case:
        yield case


class TestHuggingFaceContract(KeyedProviderContract):
    """The behaviour every network provider shares; no usage is reported, so tokens are estimated."""

    reports_tokens = False


# -- Hugging Face specifics --------------------------------------------------------------


def test_model_loading_503_waits_estimated_time_then_succeeds(case: Case) -> None:
    loading = {"error": f"Model {case.fake.model} is currently loading", "estimated_time": 0.15}
    case.server.fail_next(Reply(503, loading))
    started = time.monotonic()
    vectors = case.make()(TEXTS[:2])
    assert time.monotonic() - started >= 0.15
    assert len(case.server.requests) == 2
    assert same_bits(vectors, case.expected(TEXTS[:2]))


def test_model_that_keeps_loading_gives_up_with_the_message(case: Case) -> None:
    loading = Reply(503, {"error": "Model is currently loading", "estimated_time": 0.01})
    case.server.fail_next(*[loading] * 5)
    with pytest.raises(ProviderError) as info:
        case.make()(TEXTS[:1])
    assert (
        info.value.status == 503
        and "currently loading" in str(info.value)
        and "huggingface" in str(info.value)
    )


def test_options_sent_and_in_namespace(case: Case) -> None:
    ef = case.make(normalize=True, truncate=True)
    vectors = ef(TEXTS[:2])
    body = case.server.requests[-1].body
    assert body == {"inputs": TEXTS[:2], "normalize": True, "truncate": True}
    assert same_bits(vectors, case.fake.expected(TEXTS[:2], normalize=True, truncate=True))
    assert ef.cache_identity("document") == {
        "provider": "huggingface",
        "model": case.fake.model,
        "normalize": True,
        "truncate": True,
        "api_base": case.server.url,
    }


def test_token_embeddings_rejected_with_a_hint(case: Case) -> None:
    case.server.handler = lambda request: Reply(200, [[[0.1, 0.2], [0.3, 0.4]]])
    with pytest.raises(ProviderError, match="one vector per token"):
        case.make()(TEXTS[:1])


def test_default_server_is_the_router_and_not_in_namespace() -> None:
    ef = from_spec("huggingface:BAAI/bge-small-en-v1.5")
    assert isinstance(ef, HuggingFaceEmbeddingFunction) and ef.base_url == ROUTER_URL
    assert ef.endpoint() == "/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction"
    assert ef.cache_identity("query") == {
        "provider": "huggingface",
        "model": "BAAI/bge-small-en-v1.5",
    }
