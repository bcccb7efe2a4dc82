"""A cache identity keeps every option that changes the vectors and drops only credentials.

Credentials are recognised by exact, known names (any case, ``-``/``_``/camelCase
spellings), by provider-prefixed key names (``openai_api_key``), by secret types
(pydantic ``SecretStr``), and inside URLs (userinfo, ``?key=``-style parameters).
Everything else, ``tokenizer`` and ``max_input_tokens`` included, names the namespace.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from cachedembed.adapters._engine import model_identity
from cachedembed.embedding_functions import HuggingFaceEmbeddingServer, JinaEmbeddingFunction
from cachedembed.identity import foreign_identity
from cachedembed.redact import CREDENTIAL_NAMES, CREDENTIAL_SUFFIXES, is_credential_name

CREDENTIALS = sorted(
    {
        "api_key",
        "API-Key",
        "apiKey",
        "api_token",
        "token",
        "Token",
        "access_token",
        "auth_token",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "authorization",
        "Authorization",
        "credentials",
        "credential",
        "subscription-key",
        "secret_key",
        "private_key",
    }
    | CREDENTIAL_NAMES
    | {"provider_" + "_".join(suffix) for suffix in CREDENTIAL_SUFFIXES}
    | {"openai_api_key", "huggingfacehub_api_token", "db_password", "azureClientSecret"}
)
OUTPUT_OPTIONS = [
    "tokenizer",
    "tokenizer_name",
    "add_special_tokens",
    "max_input_tokens",
    "max_tokens",
    "truncate_tokens",
    "token_pooling",
    "tiktoken_model_name",
    "tiktoken_enabled",
    "pad_token",
    "eos_token",
    "tokens",
    "keyword",
    "key_prefix",
    "secretary_mode",
    "password_hint",
    "credential_scope",
    "api_key_env_var",
    "auth_mode_name",
    "model_name",
    "dimensions",
]


class Configured:
    def __init__(self, **config: Any) -> None:
        self.config = config

    def name(self) -> str:
        return "custom-model"

    def get_config(self) -> dict[str, Any]:
        return self.config


@pytest.mark.parametrize("name", CREDENTIALS)
def test_a_credential_name_is_dropped_from_the_identity(name: str) -> None:
    assert is_credential_name(name)
    identity = foreign_identity(Configured(model="m", **{name: "hunter2-secret"}))
    assert identity["config"] == {"model": "m"}


@pytest.mark.parametrize("name", OUTPUT_OPTIONS)
def test_an_option_that_changes_the_output_stays_in_the_identity(name: str) -> None:
    assert not is_credential_name(name)
    one = foreign_identity(Configured(model="m", **{name: "a"}))
    other = foreign_identity(Configured(model="m", **{name: "b"}))
    assert one["config"][name] == "a" and one != other


def test_nested_options_are_kept_and_nested_credentials_dropped() -> None:
    identity = foreign_identity(
        Configured(
            model="m", pooling={"token_pooling": "mean", "api_key": "k", "auth": {"token": "t"}}
        )
    )
    assert identity["config"]["pooling"] == {"token_pooling": "mean"}


def test_a_secret_typed_value_is_dropped_whatever_its_name() -> None:
    identity = foreign_identity(
        Configured(model="m", connection=SecretStr("hunter2"), extra=[SecretStr("x"), 1])
    )
    assert identity["config"] == {"model": "m", "extra": [1]}


class LangChainLike(BaseModel):
    model: str = "text-embedding-3-small"
    tiktoken_model_name: str | None = None
    openai_api_key: SecretStr | None = SecretStr("sk-secret")
    openai_api_base: str | None = None


def test_a_framework_models_output_options_are_kept_and_its_key_dropped() -> None:
    plain = model_identity(LangChainLike(), "langchain")
    other = model_identity(LangChainLike(tiktoken_model_name="cl100k_base"), "langchain")
    assert plain != other and other["config"]["tiktoken_model_name"] == "cl100k_base"
    assert "openai_api_key" not in other["config"] and "sk-secret" not in repr(other)


URL_CREDENTIALS = [
    ("https://user:{c}@gw.example.com:8443/v1", "https://gw.example.com:8443/v1"),
    ("https://gw.example.com/v1?subscription-key={c}", "https://gw.example.com/v1"),
    ("https://gw.example.com/v1?api-key={c}&api-version=2024-02-01", "https://gw.example.com/v1"),
    ("https://gw.example.com/v1?api_key={c}", "https://gw.example.com/v1"),
    ("https://gw.example.com/v1?key={c}", "https://gw.example.com/v1"),
    ("https://gw.example.com/v1?token={c}", "https://gw.example.com/v1"),
    ("https://gw.example.com/v1?access_token={c}", "https://gw.example.com/v1"),
    ("https://blob.example.com/v1?sv=2024&sig={c}", "https://blob.example.com/v1"),
]


@pytest.mark.parametrize(("template", "kept"), URL_CREDENTIALS)
def test_a_credential_in_a_server_url_is_not_identity_and_rotating_it_keeps_the_namespace(
    template: str, kept: str
) -> None:
    before, after = template.format(c="old-secret-1"), template.format(c="new-secret-2")
    foreign = [foreign_identity(Configured(model="m", url=u)) for u in (before, after)]
    tei = [HuggingFaceEmbeddingServer(url=u).cache_identity("document") for u in (before, after)]
    jina = [
        JinaEmbeddingFunction(api_key="k", api_base=u).cache_identity("document")
        for u in (before, after)
    ]
    for pair in (foreign, tei, jina):
        assert pair[0] == pair[1] and "secret" not in repr(pair[0])
    assert foreign[0]["config"]["url"] == kept and tei[0]["api_base"] == kept


def test_a_persisted_config_keeps_the_server_but_not_its_credential() -> None:
    ef = HuggingFaceEmbeddingServer(
        url="https://u:old-secret-1@tei.example.com/embed?api-version=2"
    )
    assert ef.get_config()["url"] == "https://tei.example.com/embed?api-version=2"
    assert (
        ef.client.base_url == "https://u:old-secret-1@tei.example.com?api-version=2"
    )  # requests still carry it
