"""OpenAIEmbeddingFunction: the real openai SDK against a loopback server speaking OpenAI's wire format.

The fake checks what the SDK sends (bearer key or Azure ``api-key``, model, input,
``dimensions``, ``encoding_format``) and answers like the API: shuffled ``data[].index``,
base64 float32 when asked, ``usage.prompt_tokens``, ``{"error": {...}}`` bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from cachedembed import Cached, ConfigurationError, InvalidInputError, ProviderError
from cachedembed.embedding_functions import OpenAIEmbeddingFunction
from tests.providers import scenarios
from tests.providers.fakes import FakeProvider, serve, tokens_of
from tests.providers.loopback import Request
from tests.providers.scenarios import FAST, TEXTS, Case, same_bits


class OpenAIFake(FakeProvider):
    """POST /v1/embeddings (or Azure's deployment path) as OpenAI documents it."""

    key = "sk-test-SECRET-4f9a7c21"
    model = "text-embedding-3-small"
    dimensions: int | None = None
    azure: tuple[str, str] | None = None
    """(deployment, api-version) when acting as Azure OpenAI."""
    floats_only = False
    """Ignore encoding_format and always send float lists (as some compatible servers do)."""
    max_tokens: int | None = None
    """Reject requests over this many tokens with 400 max_tokens_per_request."""

    def problem(self, request: Request) -> str | None:
        if self.azure:
            deployment, version = self.azure
            if request.path != f"/openai/deployments/{deployment}/embeddings?api-version={version}":
                return f"unexpected Azure path {request.path}"
            if request.headers.get("api-key") != self.key:
                return "bad credential: missing api-key header"
        else:
            if request.path != "/v1/embeddings":
                return f"unexpected path {request.path}"
            if problem := self.bearer_problem(request):
                return problem
        body = request.body
        if body.get("encoding_format") not in (None, "float", "base64"):
            return f"bad encoding_format {body.get('encoding_format')!r}"
        if any(t == "" for t in body.get("input", [])):
            return "'$.input' is invalid: empty string"
        return self.field_problems(request, {"model": self.model, "dimensions": self.dimensions})

    def __call__(self, request: Request) -> Any:
        body = request.body
        if self.max_tokens is not None and isinstance(body, dict):
            total = sum(tokens_of(t) for t in body.get("input", []))
            if total > self.max_tokens:
                from tests.providers.loopback import Reply

                return Reply(
                    400,
                    {
                        "error": {
                            "message": f"Requested {total} tokens, max {self.max_tokens} tokens per request",
                            "type": "max_tokens_per_request",
                            "param": None,
                            "code": "max_tokens_per_request",
                        }
                    },
                )
        return super().__call__(request)

    def salt(self, request: Request) -> str:
        return f"{request.body.get('model')}/{request.body.get('dimensions')}"

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        data = self.indexed(
            vectors, request.body.get("encoding_format") == "base64" and not self.floats_only
        )
        used = sum(tokens_of(t) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }

    def error_body(self, message: str) -> Any:
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    fake = OpenAIFake()
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with serve(fake) as server:

        def make(**overrides: Any) -> OpenAIEmbeddingFunction:
            options: dict[str, Any] = {
                "model_name": fake.model,
                "api_base": f"{server.url}/v1",
                "retry": FAST,
            }
            return OpenAIEmbeddingFunction(**{**options, **overrides})

        yield Case(fake, server, make)


class TestOpenAIContract(scenarios.KeyedProviderContract):
    """The shared provider contract (see :mod:`tests.providers.scenarios`)."""

    rate_limits: ClassVar[list[tuple[dict[str, str], float]]] = [
        ({"retry-after-ms": "60"}, 0.06),
        ({"Retry-After": "0.05"}, 0.05),
    ]


# -- OpenAI specifics ------------------------------------------------------------------


def test_requests_base64_and_decodes_bit_exact(case: Case, sqlite_url: str) -> None:
    vectors = Cached(case.make(), sqlite_url)(TEXTS)
    assert all(r.body["encoding_format"] == "base64" for r in case.server.requests)
    assert isinstance(case.fake.batches, list) and same_bits(vectors, case.expected(TEXTS))


def test_compatible_server_sending_floats_decodes_the_same(case: Case) -> None:
    case.fake.floats_only = True
    assert same_bits(case.make()(TEXTS), case.expected(TEXTS))


def test_dimensions_sent_and_part_of_namespace(case: Case) -> None:
    case.fake.dimensions = 256
    ef = case.make(dimensions=256)
    assert same_bits(ef(TEXTS[:2]), case.fake.expected(TEXTS[:2], dimensions=256))
    assert case.server.requests[-1].body["dimensions"] == 256
    assert ef.cache_identity("document")["dimensions"] == 256
    assert case.make().cache_identity("document") != ef.cache_identity("document")


def test_ada_002_never_gets_dimensions(case: Case) -> None:
    case.fake.model = "text-embedding-ada-002"
    ef = case.make(model_name="text-embedding-ada-002", dimensions=256)
    ef(["x"])
    assert "dimensions" not in case.server.requests[-1].body
    assert "dimensions" not in ef.cache_identity("document")


def test_token_limit_splits_batches(case: Case) -> None:
    ef = case.make()
    ef.max_batch_tokens = 10  # estimate: 4 bytes a token; 16-byte texts are 4 tokens each
    texts = [f"sixteen bytes {i:02d}" for i in range(7)]
    assert all(len(t) == 16 for t in texts)
    assert same_bits(ef(texts), case.expected(texts))
    assert [len(b) for b in case.fake.batches] == [2, 2, 2, 1]


def test_max_tokens_per_request_error_halves_the_batch(case: Case) -> None:
    case.fake.max_tokens = 20  # the server's tokenizer counts more than our estimate
    texts = [f"text {i} " * 3 for i in range(8)]
    vectors = case.make()(texts)
    assert same_bits(vectors, case.expected(texts))
    assert [t for b in case.fake.batches for t in b] == texts
    assert max(sum(tokens_of(t) for t in b) for b in case.fake.batches) <= 20


def test_single_text_over_token_limit_raises(case: Case) -> None:
    case.fake.max_tokens = 5
    with pytest.raises(ProviderError, match="max 5 tokens per request") as info:
        case.make()(["a text far longer than five tokens of the fake tokenizer"])
    assert info.value.status == 400


def test_azure_deployment_path_and_api_key_header(case: Case, sqlite_url: str) -> None:
    case.fake.azure = ("my-embedder", "2024-10-21")
    ef = OpenAIEmbeddingFunction(
        model_name=case.fake.model,
        api_base=case.server.url,
        api_type="azure",
        api_version="2024-10-21",
        deployment_id="my-embedder",
        retry=FAST,
    )
    vectors = Cached(ef, sqlite_url)(TEXTS[:3])
    assert same_bits(vectors, case.expected(TEXTS[:3]))
    request = case.server.requests[-1]
    assert "authorization" not in request.headers
    identity = ef.cache_identity("document")
    assert identity["deployment"] == "my-embedder" and identity["endpoint"] == case.server.url


def test_azure_needs_version_and_deployment() -> None:
    with pytest.raises(ConfigurationError, match="api_version, deployment_id"):
        OpenAIEmbeddingFunction(
            api_type="azure", api_base="https://x.openai.azure.com", api_key="k"
        )


def test_base_url_from_environment_and_in_identity(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{case.server.url}/v1")
    ef = OpenAIEmbeddingFunction(model_name=case.fake.model, retry=FAST)
    assert same_bits(ef(["x"]), case.expected(["x"]))
    assert ef.cache_identity("document")["api_base"] == f"{case.server.url}/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    official = OpenAIEmbeddingFunction(model_name=case.fake.model)
    assert official.cache_identity("document") == {"provider": "openai", "model": case.fake.model}


def test_empty_string_rejected_before_any_request(case: Case) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        case.make()(["ok", ""])
    assert case.requests == 0


def test_missing_key_fails_on_first_request_not_before(
    case: Case, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Cached(case.make(), sqlite_url)(["warm"])
    monkeypatch.delenv("OPENAI_API_KEY")
    keyless = case.make()
    cached = Cached(keyless, sqlite_url)
    assert same_bits(cached(["warm"]), case.expected(["warm"]))  # a hit needs no key
    with pytest.raises(ConfigurationError, match=r"\$OPENAI_API_KEY"):
        cached(["cold"])


def test_config_round_trip_without_secrets(case: Case) -> None:
    ef = case.make(
        dimensions=64, default_headers={"X-Team": "search", "Authorization": "Bearer nope"}
    )
    config = ef.get_config()
    assert config["default_headers"] == {"X-Team": "search"}
    assert config["api_key_env_var"] == "OPENAI_API_KEY" and "api_key" not in config
    rebuilt = OpenAIEmbeddingFunction.build_from_config(config)
    assert rebuilt.cache_identity("query") == ef.cache_identity("query")
    assert OpenAIEmbeddingFunction.name() == "cachedembed-openai"
