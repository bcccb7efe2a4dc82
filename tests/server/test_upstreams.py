"""The server in front of cachedembed's real provider clients, over real HTTP end to end.

client SDK -> cachedembed server -> OpenAIEmbeddingFunction (openai SDK) -> a loopback server
speaking OpenAI's wire format; and a server whose upstream is another cachedembed server's
TEI ``/embed``, reached through cachedembed's own TEI client.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import requests

from cachedembed import Cached
from cachedembed.embedding_functions import HuggingFaceEmbeddingServer, OpenAIEmbeddingFunction
from cachedembed.embedding_functions._http import RetryPolicy
from cachedembed.server import Upstream, create_app
from cachedembed.stores import Store, open_store
from tests.providers.loopback import LoopbackServer, Reply, Request

from .conftest import Served
from .harness import scripted_tokens, scripted_vector, serving

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"


def openai_upstream(request: Request) -> Reply:
    """OpenAI's /v1/embeddings: scripted vectors (base64 when asked), usage as OpenAI reports it."""
    texts = request.body["input"]
    rows = [scripted_vector(t, request.body["model"], 6) for t in texts]
    as_b64 = request.body.get("encoding_format") == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
            if as_b64
            else v.tolist(),
        }
        for i, v in enumerate(rows)
    ]
    tokens = sum(scripted_tokens(t) for t in texts)
    return Reply(
        body={
            "object": "list",
            "data": data,
            "model": request.body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    with LoopbackServer(openai_upstream) as server:
        yield server


@pytest.fixture
def proxy(upstream: LoopbackServer, cache: Store) -> Iterator[str]:
    ef = OpenAIEmbeddingFunction(
        api_key=UPSTREAM_KEY,
        model_name="text-embedding-3-small",
        api_base=f"{upstream.url}/v1",
        retry=RetryPolicy(max_attempts=1),  # let the client see the upstream's 429
    )
    app = create_app([Upstream.of(Cached(ef, cache), "openai:text-embedding-3-small")])
    with serving(app) as url:
        yield url


def test_openai_sdk_through_the_server_to_an_openai_wire_upstream(
    upstream: LoopbackServer, proxy: str
) -> None:
    sdk = openai.OpenAI(base_url=f"{proxy}/v1", api_key="client-key", max_retries=0)
    texts = ["alpha beta", "gamma", "alpha beta"]
    first = sdk.embeddings.create(model="text-embedding-3-small", input=texts)
    got = np.array([d.embedding for d in first.data], dtype=np.float32)
    want = np.stack([scripted_vector(t, "text-embedding-3-small", 6) for t in texts])
    assert got.tobytes() == want.tobytes()
    assert len(upstream.requests) == 1
    sent = upstream.requests[0]
    assert sent.body["input"] == ["alpha beta", "gamma"]  # each distinct text once
    # The server's key goes upstream; the client's key never does.
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "client-key" not in repr(sent)
    # Cached now: no upstream call, same vectors, same usage as the provider billed.
    again = sdk.embeddings.create(model="text-embedding-3-small", input=texts)
    assert [d.embedding for d in again.data] == [d.embedding for d in first.data]
    assert len(upstream.requests) == 1
    billed = scripted_tokens("alpha beta") + scripted_tokens("gamma")
    assert (
        first.usage.prompt_tokens
        == again.usage.prompt_tokens
        == billed + scripted_tokens("alpha beta")
    )


def test_an_upstream_429_reaches_the_client_with_its_retry_after(
    upstream: LoopbackServer, proxy: str
) -> None:
    upstream.fail_next(
        Reply(
            429,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            headers={"Retry-After": "7"},
        )
    )
    response = requests.post(
        f"{proxy}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert "Rate limit reached" in response.json()["error"]["message"]


def test_an_upstream_key_rejection_is_a_502_that_quotes_nothing(
    upstream: LoopbackServer, proxy: str
) -> None:
    upstream.fail_next(
        Reply(
            401,
            {
                "error": {
                    "message": "Incorrect API key provided: sk-upst*********cdef",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    )
    response = requests.post(
        f"{proxy}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
    )
    assert response.status_code == 502
    assert "sk-upst" not in response.text and "cdef" not in response.text


def test_a_server_can_use_another_servers_tei_endpoint_as_its_upstream(
    served: Served, tmp_path: Path
) -> None:
    # The inner server (first model: scripted "small-1") answers /embed, /info and x-compute-tokens.
    info = requests.get(f"{served.url}/info").json()
    assert info["model_id"] == "small" and info["max_client_batch_size"] == 2048
    outer_cache = open_store(f"sqlite:///{tmp_path / 'outer.db'}")
    tei = HuggingFaceEmbeddingServer(url=f"{served.url}/embed", normalize=False)
    app = create_app([Upstream.of(Cached(tei, outer_cache), f"tei:{served.url}", alias="chained")])
    texts = ["one two", "three", "one two"]
    with serving(app) as outer:
        sdk = openai.OpenAI(base_url=f"{outer}/v1", api_key="x", max_retries=0)
        response = sdk.embeddings.create(model="chained", input=texts)
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert got.tobytes() == np.stack([scripted_vector(t, "small-1", 8) for t in texts]).tobytes()
    assert served.small.sent == ["one two", "three"]
    # Tokens survive the hop exactly: the inner server reports them in x-compute-tokens.
    outer_total = Cached(tei, outer_cache).stats()
    assert outer_total["tokens_embedded"] == scripted_tokens("one two") + scripted_tokens("three")
    assert outer_total["tokens_embedded_estimated"] == 0
