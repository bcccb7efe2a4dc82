"""Chroma's own checks of an embedding function pass for ``Cached`` and cachedembed's classes.

The protocol check is Chroma's (``validate_embedding_function``); the config check validates
each class's ``get_config()`` against Chroma's JSON schema for the same provider, allowing
only the extra keys docs/providers.md lists (and ``null`` for unset options).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from chromadb.api.types import validate_embedding_function
from chromadb.utils.embedding_functions.schemas import load_schema

import cachedembed.embedding_functions as functions
from cachedembed import Cached
from tests.conftest import FakeEF

PROVIDERS_DOC = Path(__file__).resolve().parents[1] / "docs" / "providers.md"
API_KEYS = (
    "OPENAI_API_KEY",
    "CO_API_KEY",
    "JINA_API_KEY",
    "VOYAGE_API_KEY",
    "GEMINI_API_KEY",
    "HF_TOKEN",
)
# Keys Chroma requires that stay null when unset (docs/providers.md says why).
NULL_WHEN_UNSET = {
    "OllamaEmbeddingFunction": {"url"},
    "GoogleGenerativeAiEmbeddingFunction": {"task_type"},
}
SERVER_CLASSES = {"HuggingFaceEmbeddingServer": {"url": "http://127.0.0.1:8080"}}


def documented_extras() -> dict[str, tuple[str, set[str]]]:
    """class name -> (Chroma schema, keys beyond it), from the table in docs/providers.md."""
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|([^|\n]*)\|$", PROVIDERS_DOC.read_text(), re.M)
    return {cls: (schema, set(re.findall(r"`(\w+)`", extras))) for schema, cls, extras in rows}


@pytest.fixture
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in API_KEYS:
        monkeypatch.setenv(var, "test-key-not-used")


def build(name: str) -> Any:
    return getattr(functions, name)(**SERVER_CLASSES.get(name, {}))


def test_every_class_with_a_chroma_counterpart_is_in_the_documented_table() -> None:
    assert set(documented_extras()) == set(functions.CLASSES)


@pytest.mark.parametrize("name", sorted(functions.CLASSES))
def test_configs_follow_chromas_schema_beyond_the_documented_extras(
    name: str, api_keys: None
) -> None:
    schema_name, extras = documented_extras()[name]
    config = build(name).get_config()
    assert extras <= set(config)  # the table lists no key the config does not have
    known = {k: v for k, v in config.items() if k not in extras and v is not None}
    schema = load_schema(schema_name)
    missing = set(schema.get("required", [])) - set(known)
    assert missing == NULL_WHEN_UNSET.get(name, set())
    stand_ins = {k: "set" for k in missing}  # both are strings in Chroma's schemas
    jsonschema.Draft7Validator(schema).validate({**known, **stand_ins})
    unknown = set(config) - set(schema["properties"])
    assert unknown == extras  # and every key Chroma lacks is listed


@pytest.mark.parametrize("name", sorted(functions.CLASSES))
def test_classes_pass_chromas_protocol_check(name: str, api_keys: None) -> None:
    ef = build(name)
    validate_embedding_function(ef)
    wrapped = Cached(ef, "memory://")
    validate_embedding_function(wrapped)
    assert wrapped.default_space() in wrapped.supported_spaces()


def test_cached_passes_chromas_protocol_check_around_a_plain_function(sqlite_url: str) -> None:
    validate_embedding_function(Cached(FakeEF(), sqlite_url))


def test_a_cached_config_rebuilds_the_same_function(sqlite_url: str) -> None:
    wrapped = Cached(
        functions.SentenceTransformerEmbeddingFunction(normalize_embeddings=True), sqlite_url
    )
    rebuilt = Cached.build_from_config(wrapped.get_config())
    assert rebuilt.get_config() == wrapped.get_config()
    assert rebuilt.identity("document") == wrapped.identity("document")
