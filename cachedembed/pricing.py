"""The price table: USD per 1M input tokens, per provider and model.

Built-in prices ship in ``prices.toml``. Users override or extend them, later sources
winning: ``<user config dir>/cachedembed/prices.toml``, the file named by
``$CACHEDEMBED_PRICES``, then ``$CACHEDEMBED_PRICE`` (``"openai/my-model=0.05,acme/*=0.1"``).
A model with no price is *unknown*: reports show its cost as unknown, never as $0.

Batch-API prices are a second column, keyed ``provider/model@batch`` (overridden the same
way); a model without one is billed at its normal price for batch tokens.
"""

from __future__ import annotations

import functools
import sys
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from .errors import ConfigurationError
from .settings import price_sources

# Chroma's built-in function names -> the provider names prices are keyed by.
_CHROMA_PROVIDERS = {
    "openai": "openai",
    "cohere": "cohere",
    "google_generative_ai": "google",
    "google_gemini": "google",
    "google_vertex": "google",
    "voyageai": "voyage",
    "sentence_transformer": "sentence-transformers",
    "default": "sentence-transformers",
    "instructor": "instructor",
    "ollama": "ollama",
    "huggingface_server": "tei",
    "huggingface": "huggingface",
    "jina": "jina",
    "mistral": "mistral",
}

# This package's provider names that prices know by another name.
_OWN_PROVIDERS = {"gemini": "google"}


def _parse_inline(value: str) -> dict[str, float]:
    prices: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, price = item.partition("=")
        try:
            if not sep:
                raise ValueError
            prices[key.strip()] = float(price)
        except ValueError:
            raise ConfigurationError(
                f"$CACHEDEMBED_PRICE: cannot read {item!r}; write provider/model=USD_PER_1M_TOKENS"
            ) from None
    return prices


def _read_file(path: Path) -> dict[str, float]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"price file {path}: {exc}") from None
    return {str(k): float(v) for k, v in data.items()}


@functools.lru_cache(maxsize=8)
def _table(env_file: str | None, env_inline: str | None, user_file: str) -> dict[str, float]:
    table = {
        str(k): float(v)
        for k, v in tomllib.loads(
            resources.files("cachedembed").joinpath("prices.toml").read_text(encoding="utf-8")
        ).items()
    }
    if Path(user_file).is_file():
        table.update(_read_file(Path(user_file)))
    if env_file:
        table.update(_read_file(Path(env_file)))
    if env_inline:
        table.update(_parse_inline(env_inline))
    return table


def prices() -> dict[str, float]:
    """The effective table, built-ins merged with the user's overrides."""
    from platformdirs import user_config_dir

    user_file = str(Path(user_config_dir("cachedembed")) / "prices.toml")
    return _table(*price_sources(), user_file)


def price_key_provider(provider: str) -> str:
    """The provider name prices use (Chroma's ``chroma:openai`` -> ``openai``)."""
    if provider.startswith("chroma:"):
        return _CHROMA_PROVIDERS.get(provider[len("chroma:") :], provider[len("chroma:") :])
    return _OWN_PROVIDERS.get(provider, provider)


def price_per_million(provider: str, model: str, *, batch: bool = False) -> float | None:
    """USD per 1M input tokens for ``model`` of ``provider``; ``None`` when unknown.

    ``batch``: the provider's batch-API price, falling back to the normal one.
    """
    table = prices()
    provider = price_key_provider(provider)
    keys = (f"{provider}/{model}", f"{provider}/{model.rsplit('/', 1)[-1]}", f"{provider}/*")
    for suffix in ("@batch", "") if batch else ("",):
        for key in keys:
            if key + suffix in table:
                return table[key + suffix]
    return None


def dollars(tokens: int, price: float | None) -> float | None:
    """Cost of ``tokens`` at ``price`` per 1M; ``None`` (unknown) when the price is."""
    return None if price is None else tokens * price / 1_000_000
