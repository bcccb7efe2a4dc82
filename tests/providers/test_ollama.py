"""OllamaEmbeddingFunction against a loopback server speaking Ollama's ``/api/embed`` format.

The fake checks model and input, answers ``{"embeddings": [...], "prompt_eval_count": N}``
in input order (Ollama sends no index) and errors as ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cachedembed import ProviderError
from cachedembed.embedding_functions import OllamaEmbeddingFunction
from cachedembed.embedding_functions.ollama import host_url
from tests.providers import scenarios
from tests.providers.fakes import FakeProvider, serve, tokens_of
from tests.providers.loopback import Reply, Request
from tests.providers.scenarios import FAST, Case, same_bits


class OllamaFake(FakeProvider):
    model = "nomic-embed-text"
    shuffle = False

    def problem(self, request: Request) -> str | None:
        if request.path != "/api/embed":
            return f"unexpected path {request.path}"
        if "authorization" in request.headers:
            return "a local Ollama server takes no credential"
        return None

    def __call__(self, request: Request) -> Reply:
        model = request.body.get("model") if isinstance(request.body, dict) else None
        if self.problem(request) is None and model not in (self.model, f"{self.model}:latest"):
            return Reply(404, {"error": f'model "{model}" not found, try pulling it first'})
        return super().__call__(request)

    def salt(self, request: Request) -> str:
        return f"{request.body.get('model')}/{request.body.get('dimensions')}"

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        return {
            "model": request.body["model"],
            "embeddings": [[float(x) for x in v] for v in vectors],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": sum(tokens_of(t) for t in texts),
        }

    def error_body(self, message: str) -> Any:
        return {"error": message}


@pytest.fixture
def case(monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    fake = OllamaFake()
    with serve(fake) as server:

        def make(**overrides: Any) -> OllamaEmbeddingFunction:
            return OllamaEmbeddingFunction(
                **{"url": server.url, "model_name": fake.model, "retry": FAST, **overrides}
            )

        yield Case(fake, server, make)


class TestOllamaContract(scenarios.ProviderContract):
    """The shared provider contract (see :mod:`tests.providers.scenarios`)."""


# -- Ollama specifics ------------------------------------------------------------------


def test_missing_model_error_is_clear(case: Case) -> None:
    with pytest.raises(
        ProviderError, match=r'ollama returned HTTP 404: model "mxbai-embed-large" not found'
    ) as info:
        case.make(model_name="mxbai-embed-large")(["x"])
    assert case.requests == 1 and info.value.status == 404


def test_server_from_ollama_host(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", case.server.url.removeprefix("http://"))
    ef = OllamaEmbeddingFunction(model_name=case.fake.model, retry=FAST)
    assert ef.base_url == case.server.url
    assert same_bits(ef(["x"]), case.expected(["x"]))
    assert ef.get_config()["url"] is None  # rebuilt from config, it reads $OLLAMA_HOST again


@pytest.mark.parametrize(
    "value,url",
    [
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("example.com:8080", "http://example.com:8080"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://localhost:11434/api/embeddings", "http://localhost:11434"),
        ("http://[::1]:9999/", "http://[::1]:9999"),
    ],
)
def test_host_forms(value: str, url: str) -> None:
    assert host_url(value) == url


def test_options_sent_keep_alive_not_in_namespace(case: Case) -> None:
    ef = case.make(truncate=False, dimensions=256, keep_alive="10m")
    ef(["x"])
    body = case.server.requests[-1].body
    assert (body["truncate"], body["dimensions"], body["keep_alive"]) == (False, 256, "10m")
    identity = ef.cache_identity("document")
    assert identity == {
        "provider": "ollama",
        "model": "nomic-embed-text:latest",
        "truncate": False,
        "dimensions": 256,
    }
    assert (
        case.make(
            model_name="nomic-embed-text:latest", truncate=False, dimensions=256
        ).cache_identity("document")
        == identity
    )


def test_config_round_trip(case: Case) -> None:
    ef = case.make(dimensions=64)
    rebuilt = OllamaEmbeddingFunction.build_from_config(ef.get_config())
    assert rebuilt.base_url == case.server.url and rebuilt.cache_identity(
        "query"
    ) == ef.cache_identity("query")
