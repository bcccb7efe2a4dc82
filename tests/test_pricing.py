"""The price table: shipped prices, user overrides (file and environment), unknown stays unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachedembed.errors import ConfigurationError
from cachedembed.pricing import dollars, price_per_million, prices


@pytest.mark.parametrize(
    ("provider", "model", "usd"),
    [
        ("openai", "text-embedding-3-small", 0.02),
        ("openai", "text-embedding-3-large", 0.13),
        ("openai", "text-embedding-ada-002", 0.10),
        ("cohere", "embed-english-v3.0", 0.10),
        ("cohere", "embed-multilingual-v3.0", 0.10),
        ("cohere", "embed-v4.0", 0.12),
        ("google", "gemini-embedding-001", 0.15),
        ("gemini", "gemini-embedding-001", 0.15),  # GoogleGeminiEmbeddingFunction's provider
        ("voyage", "voyage-3", 0.06),
        ("voyage", "voyage-3-lite", 0.02),
        ("mistral", "mistral-embed", 0.10),
        ("sentence-transformers", "all-MiniLM-L6-v2", 0.0),
        ("ollama", "nomic-embed-text", 0.0),
    ],
)
def test_shipped_prices_per_million_tokens(provider: str, model: str, usd: float) -> None:
    assert price_per_million(provider, model) == usd


def test_chroma_function_names_and_org_prefixed_models_find_their_price() -> None:
    assert price_per_million("chroma:openai", "text-embedding-3-small") == 0.02
    assert price_per_million("chroma:google_generative_ai", "gemini-embedding-001") == 0.15
    assert price_per_million("chroma:default", "all-MiniLM-L6-v2") == 0.0
    assert price_per_million("sentence-transformers", "BAAI/bge-small-en-v1.5") == 0.0


def test_an_unknown_model_has_no_price_and_unknown_dollars() -> None:
    assert price_per_million("openai", "text-embedding-4-huge") is None
    assert price_per_million("acme", "anything") is None
    assert dollars(1_000_000, None) is None
    assert dollars(2_500_000, 0.02) == pytest.approx(0.05)
    assert dollars(123, 0.0) == 0.0


def test_overrides_apply_in_order_config_file_then_prices_file_then_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_file = (
        tmp_path / "config" / "cachedembed" / "prices.toml"
    )  # $XDG_CONFIG_HOME is tmp_path/config
    user_file.parent.mkdir(parents=True)
    user_file.write_text(
        '"openai/text-embedding-3-small" = 0.5\n"acme/m1" = 1.0\n"acme/m2" = 1.0\n"acme/m3" = 1.0\n'
    )
    assert price_per_million("openai", "text-embedding-3-small") == 0.5
    assert price_per_million("acme", "m1") == 1.0

    env_file = tmp_path / "team-prices.toml"
    env_file.write_text('"acme/m2" = 2.0\n"acme/m3" = 2.0\n')
    monkeypatch.setenv("CACHEDEMBED_PRICES", str(env_file))
    monkeypatch.setenv("CACHEDEMBED_PRICE", "acme/m3=3.0, newco/*=0.25")
    assert [price_per_million("acme", m) for m in ("m1", "m2", "m3")] == [1.0, 2.0, 3.0]
    assert price_per_million("newco", "any-model") == 0.25
    assert prices()["openai/text-embedding-3-large"] == 0.13  # built-ins not overridden stay


@pytest.mark.parametrize("bad", ["openai/x", "openai/x=cheap", "=0.1x"])
def test_a_bad_inline_price_is_a_clear_configuration_error(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEDEMBED_PRICE", bad)
    with pytest.raises(
        ConfigurationError, match=r"CACHEDEMBED_PRICE.*provider/model=USD_PER_1M_TOKENS"
    ):
        price_per_million("openai", "x")


def test_a_broken_price_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "prices.toml"
    broken.write_text("this is = = not toml")
    monkeypatch.setenv("CACHEDEMBED_PRICES", str(broken))
    with pytest.raises(ConfigurationError, match=str(broken)):
        prices()
