"""The operator's endpoints (models, health, stats, metrics) and the request size limits."""

from __future__ import annotations

import json

import openai
import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cachedembed.cli import main
from cachedembed.stores import Store

from .conftest import Served, build
from .harness import scripted_tokens, serving


def test_models_lists_each_served_model_once(served: Served) -> None:
    sdk = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["small", "wide"]
    assert sdk.models.retrieve("scripted:wide").owned_by == "scripted"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-4")
    assert requests.get(f"{served.url}/healthz").json() == {
        "status": "ok",
        "models": ["small", "wide"],
    }


def test_stats_is_what_the_cli_prints_for_the_same_cache(served: Served) -> None:
    for texts in (["a", "b"], ["a", "c", "c"]):
        requests.post(
            f"{served.url}/v1/embeddings", json={"model": "small", "input": texts}
        ).raise_for_status()
    stats = requests.get(f"{served.url}/stats").json()
    total = stats["total"]
    assert (total["texts"], total["hits"], total["misses"]) == (5, 2, 3)
    assert total["tokens_embedded"] == sum(scripted_tokens(t) for t in "abc")
    cli = CliRunner().invoke(main, ["stats", "--json", "--cache", served.store.url])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output) == stats


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_texts_hits_tokens_dollars_and_upstream_latency(
    cache: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEDEMBED_PRICE", "scripted/small-1=0.5")
    app, _, _ = build(cache)
    with serving(app) as url:  # type: ignore[arg-type]
        post = f"{url}/v1/embeddings"
        requests.post(
            post, json={"model": "small", "input": ["one two", "three"]}
        ).raise_for_status()
        requests.post(
            post, json={"model": "small", "input": ["one two", "one two"]}
        ).raise_for_status()
        requests.post(post, json={"model": "nope", "input": "x"})
        requests.post(f"{url}/embed", json={"inputs": "three"}).raise_for_status()
        m = metrics(url)
    small = (("model", "small"),)
    assert m[("cachedembed_texts_total", small)] == 5
    assert m[("cachedembed_cache_hits_total", small)] == 3
    assert m[("cachedembed_cache_misses_total", small)] == 2
    embedded = scripted_tokens("one two") + scripted_tokens("three")
    saved = 2 * scripted_tokens("one two") + scripted_tokens("three")
    assert m[("cachedembed_tokens_embedded_total", small)] == embedded
    assert m[("cachedembed_tokens_saved_total", small)] == saved
    assert m[("cachedembed_dollars_spent_total", small)] == pytest.approx(embedded * 0.5 / 1e6)
    assert m[("cachedembed_dollars_saved_total", small)] == pytest.approx(saved * 0.5 / 1e6)
    # One provider round trip (both misses in one batch): one latency observation.
    assert m[("cachedembed_upstream_seconds_count", small)] == 1
    assert (
        m[("cachedembed_requests_total", (("endpoint", "/v1/embeddings"), ("status", "200")))] == 2
    )
    assert (
        m[("cachedembed_requests_total", (("endpoint", "/v1/embeddings"), ("status", "404")))] == 1
    )
    assert m[("cachedembed_requests_total", (("endpoint", "/embed"), ("status", "200")))] == 1


def test_request_limits_answer_413_before_reading_or_embedding(cache: Store) -> None:
    app, small, _ = build(cache, max_inputs=3, max_body_bytes=2000)
    with serving(app) as url:  # type: ignore[arg-type]
        many = requests.post(f"{url}/v1/embeddings", json={"model": "small", "input": ["a"] * 4})
        assert many.status_code == 413
        assert (
            "at most 3" in many.json()["error"]["message"]
            and "--max-inputs" in many.json()["error"]["message"]
        )
        big = requests.post(f"{url}/v1/embeddings", json={"model": "small", "input": "x" * 5000})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        assert "--max-body-bytes" in big.json()["error"]["message"]

        # A chunked body declares no length: the limit applies while it streams in.
        def chunks():  # type: ignore[no-untyped-def]
            yield b'{"model": "small", "input": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        streamed = requests.post(
            f"{url}/v1/embeddings", data=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        tei = requests.post(f"{url}/embed", json={"inputs": ["a"] * 4})
        assert tei.status_code == 413 and tei.json()["error_type"] == "Validation"
        assert requests.post(f"{url}/v1/embeddings", json={"model": "small", "input": ["a"] * 3}).ok
    assert small.sent == ["a"]


def test_no_endpoint_reveals_the_upstream_providers_key(cache: Store) -> None:
    from cachedembed import Cached
    from cachedembed.server import Upstream, create_app

    from .harness import ScriptedProvider

    secret = "sk-upstream-SECRET-0123456789"
    provider = ScriptedProvider("keyed", 8)
    provider.api_key = secret  # held like a real provider holds its key
    app = create_app([Upstream.of(Cached(provider, cache), "scripted:keyed")])
    with serving(app) as url:
        bodies = [
            requests.post(f"{url}/v1/embeddings", json={"model": "keyed", "input": "x"}).text,
            requests.post(f"{url}/v1/embeddings", json={"model": "nope", "input": "x"}).text,
            requests.post(f"{url}/embed", json={"inputs": "x"}).text,
        ]
        bodies += [
            requests.get(f"{url}{path}").text
            for path in ("/v1/models", "/v1/models/keyed", "/healthz", "/stats", "/metrics")
        ]
    assert all(secret not in body for body in bodies)
