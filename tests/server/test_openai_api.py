"""``POST /v1/embeddings`` driven by the real ``openai`` SDK over HTTP, as any OpenAI client would."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
import requests

from cachedembed.errors import ProviderError, ProviderResponseError

from .conftest import API_KEY, Served, build
from .harness import scripted_tokens, scripted_vector, serving


def client(url: str, key: str = "unused", **options: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, **options)  # type: ignore[arg-type]


TEXTS = ["the cat sat", "on the mat", "", "a much longer sentence of seven words"]


def decode(embedding: list[float] | str) -> np.ndarray:
    """A float list, or base64 of little-endian float32 (what the caller gets when it asks for base64)."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.array(embedding, dtype=np.float32)


@pytest.mark.parametrize("encoding_format", ["float", "base64", openai.omit])
def test_vectors_are_the_providers_bit_for_bit_in_input_order(
    served: Served, encoding_format: object
) -> None:
    # Omitted, the SDK asks for base64 and decodes it itself; asked for, base64 stays a string.
    response = client(served.url).embeddings.create(
        model="small",
        input=TEXTS,
        encoding_format=encoding_format,  # type: ignore[arg-type]
    )
    assert [d.index for d in response.data] == [0, 1, 2, 3]
    got = np.stack([decode(d.embedding) for d in response.data])
    want = np.stack([scripted_vector(t, "small-1", 8) for t in TEXTS])
    assert got.tobytes() == want.tobytes()
    assert response.model == "small"
    # Distinct texts, one provider batch: usage is exactly what the provider billed.
    tokens = sum(scripted_tokens(t) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_usage_counts_every_occurrence_of_a_text(served: Served) -> None:
    once = client(served.url).embeddings.create(model="small", input="one two three")
    twice = client(served.url).embeddings.create(model="small", input=["one two three"] * 2)
    assert once.usage.prompt_tokens == scripted_tokens("one two three") == 4
    assert twice.usage.prompt_tokens == 8
    assert served.small.sent == ["one two three"]


def test_repeats_are_served_from_the_cache_and_still_report_their_tokens(served: Served) -> None:
    sdk = client(served.url)
    texts = [*TEXTS, TEXTS[0]]
    first = sdk.embeddings.create(model="small", input=texts, encoding_format="float")
    second = sdk.embeddings.create(
        model="small", input=list(reversed(texts)), encoding_format="float"
    )
    # Each distinct text reached the provider once, duplicates inside the request included.
    assert sorted(served.small.sent) == sorted(TEXTS)
    assert [d.embedding for d in second.data] == [d.embedding for d in reversed(first.data)]
    # usage is what these texts cost, whether embedded now or earlier (from the entries).
    assert second.usage.prompt_tokens == first.usage.prompt_tokens


def test_a_single_string_input_and_the_model_name_without_alias(served: Served) -> None:
    for name in ("wide", "scripted:wide"):
        response = client(served.url).embeddings.create(
            model=name, input="hello world", encoding_format="float"
        )
        assert len(response.data) == 1 and len(response.data[0].embedding) == 12
        assert response.model == name
        assert response.usage.prompt_tokens == 3
    assert served.wide.sent == ["hello world"]


def test_dimensions_route_only_when_the_model_serves_that_size(served: Served) -> None:
    sdk = client(served.url)
    ok = sdk.embeddings.create(model="wide", input="a", dimensions=12, encoding_format="float")
    assert len(ok.data[0].embedding) == 12
    with pytest.raises(openai.BadRequestError) as err:
        sdk.embeddings.create(model="wide", input="b", dimensions=256)
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "dimensions"
    assert body["code"] == "unsupported_dimensions" and "12-dimensional" in body["message"]
    assert served.wide.sent == ["a"]  # the size is known: refused before any provider call


def test_dimensions_pick_between_two_upstreams_under_one_alias(
    cache: object, tmp_path: object
) -> None:
    from cachedembed import Cached
    from cachedembed.server import Upstream, create_app

    from .harness import ScriptedProvider

    full, short = ScriptedProvider("m", 16), ScriptedProvider("m", 4)
    app = create_app(
        [
            Upstream.of(Cached(full, cache), "scripted:m", "m"),
            Upstream.of(Cached(short, cache), "scripted:m@4", "m"),
        ]
    )
    with serving(app) as url:
        sdk = client(url)
        assert (
            len(
                sdk.embeddings.create(model="m", input="t", encoding_format="float")
                .data[0]
                .embedding
            )
            == 16
        )
        four = sdk.embeddings.create(model="m", input="t", dimensions=4, encoding_format="float")
        assert len(four.data[0].embedding) == 4
        assert (
            len(sdk.embeddings.create(model="m", input="t", dimensions=16).data[0].embedding) == 16
        )


def test_unknown_model_is_a_404_naming_the_served_ones(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(served.url).embeddings.create(model="text-embedding-3-large", input="x")
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and body["param"] == "model"
    assert "small" in body["message"] and "wide" in body["message"]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "small"}, "input", "'input' is required"),
        ({"model": "small", "input": []}, "input", "empty list"),
        ({"model": "small", "input": [[1, 2, 3]]}, "input", "token array"),
        ({"model": "small", "input": ["ok", 5]}, "input", "token array"),
        ({"model": "small", "input": ["ok", None]}, "input", "expected a string"),
        (
            {"model": "small", "input": "x", "encoding_format": "int8"},
            "encoding_format",
            "'float' or 'base64'",
        ),
        ({"model": "small", "input": "x", "dimensions": 0}, "dimensions", "positive integer"),
        (
            {"model": "small", "input": "x", "temperature": 1},
            "temperature",
            "Unrecognized request argument",
        ),
        ({"input": "x"}, "model", "'model' is required"),
        ({"model": "small", "input": "\ud800"}, "input", "UTF-8"),
    ],
)
def test_bad_requests_are_400_in_openais_error_shape_before_any_provider_call(
    served: Served, body: dict[str, object], param: str, fragment: str
) -> None:
    response = requests.post(f"{served.url}/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"]
    assert served.small.sent == []


def test_not_json_and_unknown_routes_answer_in_the_same_shape(served: Served) -> None:
    bad = requests.post(
        f"{served.url}/v1/embeddings",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    assert requests.get(f"{served.url}/v1/nothing").json()["error"]["code"] == "not_found"
    wrong = requests.get(f"{served.url}/v1/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_upstream_rate_limit_passes_through_with_retry_after(served: Served) -> None:
    served.small.failures.append(
        ProviderError("scripted", "slow down", status=429, retry_after=7.2, retryable=True)
    )
    response = requests.post(f"{served.url}/v1/embeddings", json={"model": "small", "input": "x"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "8"
    assert response.headers["retry-after-ms"] == "7200"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    # The SDK sees its own RateLimitError; after the limit lifts the same text succeeds.
    served.small.failures.append(
        ProviderError("scripted", "slow down", status=429, retry_after=1, retryable=True)
    )
    with pytest.raises(openai.RateLimitError):
        client(served.url).embeddings.create(model="small", input="x")
    assert len(client(served.url).embeddings.create(model="small", input="x").data) == 1


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (ProviderError("scripted", "internal", status=500, retryable=True), 502, "upstream_error"),
        (
            ProviderError(
                "scripted", "connection to http://h failed (ConnectionError)", retryable=True
            ),
            502,
            "upstream_error",
        ),
        (
            ProviderError("scripted", "request timed out after 60.0s", retryable=True),
            504,
            "upstream_timeout",
        ),
        (ProviderError("scripted", "gateway", status=504), 504, "upstream_timeout"),
        (
            ProviderResponseError("scripted", "expected 1 vectors, got 0"),
            502,
            "upstream_bad_response",
        ),
        (ProviderError("scripted", "input too long", status=400), 400, "upstream_rejected_input"),
    ],
)
def test_upstream_failures_map_to_gateway_statuses(
    served: Served, failure: Exception, status: int, code: str
) -> None:
    served.small.failures.append(failure)
    response = requests.post(f"{served.url}/v1/embeddings", json={"model": "small", "input": "x"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_upstream_credential_errors_never_echo_the_upstream_message(served: Served) -> None:
    served.small.failures.append(
        ProviderError(
            "scripted", "Incorrect API key provided: sk-proj-abc***********wxyz", status=401
        )
    )
    response = requests.post(f"{served.url}/v1/embeddings", json={"model": "small", "input": "x"})
    assert response.status_code == 502
    assert "sk-proj" not in response.text and "wxyz" not in response.text
    assert response.json()["error"]["code"] == "upstream_auth_error"


def test_with_an_api_key_every_request_but_the_health_probes_needs_the_bearer(
    cache: object,
) -> None:
    app, small, _ = build(cache, api_key=API_KEY)  # type: ignore[arg-type]
    with serving(app) as url:  # type: ignore[arg-type]
        with pytest.raises(openai.AuthenticationError) as err:
            client(url, key="wrong").embeddings.create(model="small", input="x")
        assert isinstance(err.value.body, dict) and err.value.body["code"] == "invalid_api_key"
        for path in ("/v1/models", "/info", "/stats", "/metrics", "/openapi.json"):
            response = requests.get(f"{url}{path}")
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
        tei = requests.post(
            f"{url}/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer nope"}
        )
        assert tei.status_code == 401 and tei.json()["error_type"] == "Unauthorized"
        assert small.sent == []
        ok = client(url, key=API_KEY).embeddings.create(model="small", input="x")
        assert len(ok.data) == 1
        assert requests.get(f"{url}/healthz", headers={"Authorization": f"Bearer {API_KEY}"}).ok
        # Load balancers probe without the key: the probes answer, and reveal nothing else.
        assert requests.get(f"{url}/healthz").json() == {
            "status": "ok",
            "models": ["small", "wide"],
        }
        assert requests.get(f"{url}/health").status_code == 200
