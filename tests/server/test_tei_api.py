"""``POST /embed`` in Text Embeddings Inference's shape, over plain HTTP."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import requests

from cachedembed.errors import ProviderError
from cachedembed.stores import Store

from .conftest import API_KEY, Served, build
from .harness import scripted_vector, serving


def test_answers_a_bare_list_of_raw_vectors_with_the_first_model(served: Served) -> None:
    response = requests.post(
        f"{served.url}/embed", json={"inputs": ["b", "a", "b"], "normalize": False}
    )
    assert response.status_code == 200
    got = np.array(response.json(), dtype=np.float32)
    want = np.stack([scripted_vector(t, "small-1", 8) for t in ["b", "a", "b"]])
    assert got.tobytes() == want.tobytes()
    assert served.small.sent == ["b", "a"]


def test_normalizes_by_default_as_tei_does(served: Served) -> None:
    one = requests.post(f"{served.url}/embed", json={"inputs": "hello"}).json()
    assert len(one) == 1
    vector = np.array(one[0], dtype=np.float64)
    raw = scripted_vector("hello", "small-1", 8).astype(np.float64)
    assert abs(np.linalg.norm(vector) - 1) < 1e-6
    assert np.allclose(vector, raw / np.linalg.norm(raw), atol=1e-7)
    # truncate and truncation_direction are accepted (the upstream's configuration decides).
    again = requests.post(
        f"{served.url}/embed",
        json={"inputs": ["hello"], "truncate": True, "truncation_direction": "Right"},
    )
    assert again.json() == one
    assert served.small.sent == ["hello"]


def test_validation_errors_are_422_in_teis_error_shape(served: Served) -> None:
    for body in (
        {},
        {"inputs": []},
        {"inputs": [1]},
        {"inputs": "x", "normalize": "yes"},
        {"inputs": "x", "prompt_name": "query"},
    ):
        response = requests.post(f"{served.url}/embed", json=body)
        assert response.status_code == 422, body
        assert set(response.json()) == {"error", "error_type"}
        assert response.json()["error_type"] == "Validation"
    assert served.small.sent == []


def test_upstream_overload_is_429_with_retry_after(served: Served) -> None:
    served.small.failures.append(
        ProviderError("scripted", "busy", status=429, retry_after=3, retryable=True)
    )
    response = requests.post(f"{served.url}/embed", json={"inputs": "x"})
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json()["error_type"] == "Overloaded"


def test_chromas_huggingface_embedding_server_client_works_against_it(cache: Store) -> None:
    from chromadb.utils.embedding_functions import HuggingFaceEmbeddingServer

    app, small, _ = build(cache, api_key=API_KEY)
    with serving(app) as url, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Chroma warns that a direct api_key is not persisted
        ef = HuggingFaceEmbeddingServer(url=f"{url}/embed", api_key=API_KEY)
        got = np.array(ef(["first document", "second document"]), dtype=np.float64)
    raw = np.stack(
        [scripted_vector(t, "small-1", 8) for t in ["first document", "second document"]]
    )
    want = raw / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    assert np.allclose(got, want, atol=1e-7)
    assert small.sent == ["first document", "second document"]


def test_huggingface_hubs_inference_client_embeds_and_checks_health(
    cache: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # InferenceClient(model=URL) POSTs feature extraction to the URL itself and probes
    # URL/health, as real TEI answers both; offline mode would refuse even loopback.
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    # `make test` sets HF_HUB_OFFLINE=1, and huggingface_hub reads it once, at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    app, small, _ = build(cache, api_key=API_KEY)
    with serving(app) as url:
        client = InferenceClient(model=url, token=API_KEY, provider="hf-inference")
        assert client.health_check() is True
        got = client.feature_extraction("hello there", normalize=False)
        assert InferenceClient(model=url, provider="hf-inference").health_check()  # no key
    assert np.asarray(got, dtype=np.float32).reshape(-1).tobytes() == (
        scripted_vector("hello there", "small-1", 8).tobytes()
    )
    assert small.sent == ["hello there"]
