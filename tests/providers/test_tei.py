"""HuggingFaceEmbeddingServer against a loopback server speaking Text Embeddings Inference's API.

The fake serves ``GET /info`` (``max_client_batch_size``) and ``POST /embed`` (``inputs``,
options, optional bearer key), rejects batches over its limit as TEI does (413/422 with
``{"error", "error_type"}``), and reports tokens in the ``x-compute-tokens`` header.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached, ProviderError
from cachedembed.embedding_functions import HuggingFaceEmbeddingServer, from_spec
from tests.providers.fakes import FakeProvider, tokens_of
from tests.providers.loopback import Reply, Request
from tests.providers.scenarios import FAST, TEXTS, Case, KeyedProviderContract, same_bits, serving


class TeiFake(FakeProvider):
    """TEI's router: /info and /embed."""

    key = "tei-test-SECRET-71a2c9d4"
    model = "BAAI/bge-base-en-v1.5"
    max_batch = 32
    status_for_too_many = 422
    """TEI >= 1.9 answers 422 to an oversized batch (413 before)."""

    def __call__(self, request: Request) -> Reply:
        if request.method == "GET" and request.path == "/info":
            return Reply(
                200,
                {
                    "model_id": self.model,
                    "max_client_batch_size": self.max_batch,
                    "max_input_length": 512,
                    "version": "1.9.0",
                },
            )
        inputs = request.body.get("inputs") if isinstance(request.body, dict) else None
        if isinstance(inputs, list) and len(inputs) > self.max_batch:
            return Reply(
                self.status_for_too_many,
                {
                    "error": f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch}",
                    "error_type": "Validation",
                },
            )
        reply = super().__call__(request)
        if reply.status == 200:
            reply.headers["x-compute-tokens"] = str(sum(tokens_of(t) for t in self.texts(request)))
        return reply

    def problem(self, request: Request) -> str | None:
        if (request.method, request.path) != ("POST", "/embed"):
            return f"unexpected {request.method} {request.path}"
        if self.key and (problem := self.bearer_problem(request)):
            return problem
        return None

    def texts(self, request: Request) -> list[str]:
        return list(request.body["inputs"]) if isinstance(request.body, dict) else []

    def salt(self, request: Request) -> str:
        body = request.body
        return (
            f"{self.model}/{body.get('normalize')}/{body.get('prompt_name')}/{body.get('truncate')}"
        )

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        return [[float(x) for x in v] for v in vectors]

    def error_body(self, message: str) -> Any:
        return {"error": message, "error_type": "Backend"}


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    fake = TeiFake()
    monkeypatch.setenv("TEI_TEST_KEY", fake.key)
    options = lambda url: {"url": url, "api_key_env_var": "TEI_TEST_KEY"}  # noqa: E731
    with serving(fake, HuggingFaceEmbeddingServer, options) as case:
        build = case.make

        def make(**overrides: Any) -> Any:
            ef = build(**overrides)
            # As if /info had been asked: the contract counts /embed requests (/info is tested below).
            ef._server_batch = fake.max_batch
            return ef

        case.make = make
        yield case


class TestTeiContract(KeyedProviderContract):
    """The behaviour every network provider shares; tokens come from ``x-compute-tokens``."""


# -- TEI specifics -----------------------------------------------------------------------


def test_batch_limit_read_once_from_info_and_honoured(case: Case, sqlite_url: str) -> None:
    case.fake.max_batch = 4
    ef = HuggingFaceEmbeddingServer(
        url=f"{case.server.url}/embed", api_key_env_var="TEI_TEST_KEY", retry=FAST
    )
    cached = Cached(ef, sqlite_url)
    texts = [f"passage {i}" for i in range(10)]
    assert same_bits(cached(texts), case.expected(texts))
    cached.embed_query(["q1", "q2", "q3", "q4", "q5"])
    # Batches of one call go out concurrently: their arrival order is not defined.
    sizes = [len(b) for b in case.fake.batches]
    assert sorted(sizes[:3]) == [2, 4, 4] and sorted(sizes[3:]) == [1, 4]
    assert [r.path for r in case.server.requests].count("/info") == 1
    assert cached.stats()["tokens_embedded"] == sum(
        tokens_of(t) for t in [*texts, "q1", "q2", "q3", "q4", "q5"]
    )


def test_server_without_info_uses_tei_default(case: Case) -> None:
    original = case.server.handler
    case.server.handler = lambda r: (
        Reply(404, {"error": "not found"}) if r.path == "/info" else original(r)
    )
    ef = HuggingFaceEmbeddingServer(url=case.server.url, api_key_env_var="TEI_TEST_KEY", retry=FAST)
    assert ef.batch_limit() == 32


@pytest.mark.parametrize("status", [413, 422, 424])
def test_tei_client_and_backend_errors_not_retried(case: Case, status: int) -> None:
    message = {
        413: "batch size 9 > maximum allowed batch size 8",
        422: "input is too long",
        424: "backend error",
    }[status]
    case.server.fail_next(Reply(status, {"error": message, "error_type": "Validation"}))
    with pytest.raises(ProviderError) as info:
        case.make()(TEXTS[:1])
    assert info.value.status == status and message in str(info.value) and "tei" in str(info.value)
    assert len(case.server.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_overloaded_or_unhealthy_retried_without_retry_after(case: Case, status: int) -> None:
    case.server.fail_next(
        Reply(status, {"error": "Model is overloaded", "error_type": "Overloaded"})
    )
    assert same_bits(case.make()(TEXTS[:2]), case.expected(TEXTS[:2]))
    assert len(case.server.requests) == 2


def test_server_url_and_prompts_are_the_namespace(case: Case) -> None:
    ef = case.make(prompt_name="passage", query_prompt_name="query", normalize=False)
    docs = ef(TEXTS[:2])
    queries = ef.embed_query(TEXTS[:2])
    assert [r.body.get("prompt_name") for r in case.server.requests] == ["passage", "query"]
    assert same_bits(docs, case.fake.expected(TEXTS[:2], prompt_name="passage", normalize=False))
    assert same_bits(queries, case.fake.expected(TEXTS[:2], prompt_name="query", normalize=False))
    identity = ef.cache_identity("query")
    assert identity == {
        "provider": "tei",
        "normalize": False,
        "prompt_name": "query",
        "api_base": case.server.url,
    }
    other = HuggingFaceEmbeddingServer(url="http://127.0.0.1:1/embed")
    assert other.cache_identity("query")["api_base"] == "http://127.0.0.1:1"


def test_spec_and_config(case: Case) -> None:
    ef = from_spec(f"tei:{case.server.url}")
    assert isinstance(ef, HuggingFaceEmbeddingServer) and ef.base_url == case.server.url
    config = case.make().get_config()
    assert case.fake.key not in repr(config) and config["url"] == case.server.url
