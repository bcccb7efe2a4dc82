"""The environment variables cachedembed reads: the one place that reads them.

Each variable is a :class:`Setting` (name, meaning) with a typed accessor; the table in
``docs/configuration.md`` lists the same ones, and ``tests/test_settings.py`` checks that
the two agree. Values are read on every call, never cached, so a test or a long-lived
process that changes the environment sees the change.

Provider variables (``OPENAI_API_KEY``, ``OLLAMA_HOST``, ...) stay with their providers:
each provider documents and reads its own, and a central list would make this module
know every provider.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name and what it configures."""

    name: str
    doc: str
    secret: bool = False
    """Whether the value is a credential (never shown, logged or exported)."""

    def value(self) -> str | None:
        """The variable's value, or ``None`` when it is unset or empty."""
        return os.environ.get(self.name) or None


CACHE_URL = Setting(
    "CACHEDEMBED_URL",
    "The cache to use when none is passed (`Cached(store=...)`, `--cache`). "
    "Default: a SQLite file in the user cache folder.",
)
HASH_KEY = Setting(
    "CACHEDEMBED_HASH_KEY",
    'The secret key of `hash="blake2b"` namespaces (keyed BLAKE2b item ids).',
    secret=True,
)
PRICES_FILE = Setting(
    "CACHEDEMBED_PRICES",
    "A TOML price table merged over the built-in one (USD per 1M tokens).",
)
PRICE_OVERRIDES = Setting(
    "CACHEDEMBED_PRICE",
    "Inline price overrides, `provider/model=USD_PER_1M_TOKENS` separated by commas.",
)
SERVER_API_KEY = Setting(
    "CACHEDEMBED_SERVER_API_KEY",
    "The bearer token `cachedembed serve` requires (default of `--api-key`).",
    secret=True,
)
DASHBOARD_API_KEY = Setting(
    "CACHEDEMBED_DASHBOARD_API_KEY",
    "The bearer token `cachedembed dashboard` requires (default of `--api-key`).",
    secret=True,
)

ALL: tuple[Setting, ...] = (
    CACHE_URL,
    HASH_KEY,
    PRICES_FILE,
    PRICE_OVERRIDES,
    SERVER_API_KEY,
    DASHBOARD_API_KEY,
)
"""Every setting, in the order the documentation lists them."""


def cache_url() -> str | None:
    """``$CACHEDEMBED_URL``, or ``None`` when unset."""
    return CACHE_URL.value()


def hash_key() -> bytes:
    """``$CACHEDEMBED_HASH_KEY`` as bytes (empty when unset: an unkeyed BLAKE2b)."""
    return (HASH_KEY.value() or "").encode()


def price_sources() -> tuple[str | None, str | None]:
    """``($CACHEDEMBED_PRICES, $CACHEDEMBED_PRICE)``, each ``None`` when unset."""
    return PRICES_FILE.value(), PRICE_OVERRIDES.value()


__all__ = [
    "ALL",
    "CACHE_URL",
    "DASHBOARD_API_KEY",
    "HASH_KEY",
    "PRICES_FILE",
    "PRICE_OVERRIDES",
    "SERVER_API_KEY",
    "Setting",
    "cache_url",
    "hash_key",
    "price_sources",
]
