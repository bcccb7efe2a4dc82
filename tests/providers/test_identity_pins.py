"""Existing caches keep hitting: every remote provider's cache identity and config are pinned.

``identity_pins.json`` was computed from the providers before they were rebuilt on one
shared base (issue #14); each case builds the class with its options and must produce
exactly the identity (both roles) and ``get_config`` recorded then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cachedembed import embedding_functions

PINS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "identity_pins.json").read_text())
_ENV_PREFIXES = (
    "OPENAI_",
    "AZURE_",
    "CO_",
    "COHERE_",
    "GEMINI_",
    "GOOGLE_",
    "JINA_",
    "VOYAGE_",
    "HF_",
    "HUGGING",
    "OLLAMA_",
    "CHROMA_",
)


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith(_ENV_PREFIXES) and var != "HF_HUB_OFFLINE":
            monkeypatch.delenv(var)


def _build(pin: dict[str, Any]) -> Any:
    cls = getattr(embedding_functions, pin["class"])
    keyless = pin["class"] == "OllamaEmbeddingFunction" or pin["kwargs"].get("vertexai")
    return cls(**pin["kwargs"], **({} if keyless else {"api_key": "sk-secret"}))


@pytest.mark.parametrize("pin", PINS, ids=[f"{p['class']}-{i}" for i, p in enumerate(PINS)])
def test_identity_and_config_are_what_they_were(pin: dict[str, Any]) -> None:
    ef = _build(pin)
    assert {role: ef.cache_identity(role) for role in ("document", "query")} == pin["identity"]
    assert ef.get_config() == pin["config"]


@pytest.mark.parametrize("pin", PINS, ids=[f"{p['class']}-{i}" for i, p in enumerate(PINS)])
def test_config_rebuilds_the_same_identity(pin: dict[str, Any]) -> None:
    ef = _build(pin)
    keyless = pin["class"] == "OllamaEmbeddingFunction" or pin["kwargs"].get("vertexai")
    # URLs are persisted without their credentials: those are passed again, like the key.
    urls = {k: v for k, v in pin["kwargs"].items() if k in ("api_base", "url")}
    rebuilt = type(ef).build_from_config(
        {**ef.get_config(), **urls, **({} if keyless else {"api_key": "sk-secret"})}
    )
    assert rebuilt.cache_identity("document") == pin["identity"]["document"]
    assert rebuilt.cache_identity("query") == pin["identity"]["query"]
    assert "sk-secret" not in json.dumps(ef.get_config())
