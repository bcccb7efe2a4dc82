"""Fixtures: a served app with two scripted models over a real SQLite cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cachedembed import Cached
from cachedembed.server import Upstream, create_app
from cachedembed.stores import Store, open_store

from .harness import ScriptedProvider, serving

API_KEY = "test-server-key-0123456789"


@dataclass
class Served:
    """A running server: its URL, its cache, and the providers behind each model alias."""

    url: str
    store: Store
    small: ScriptedProvider
    """Served as ``small`` (8-d)."""
    wide: ScriptedProvider
    """Served as ``scripted:wide`` and ``wide`` (12-d, no alias)."""


def build(store: Store, **options: object) -> tuple[object, ScriptedProvider, ScriptedProvider]:
    small = ScriptedProvider("small-1", 8)
    wide = ScriptedProvider("wide", 12)
    app = create_app(
        [
            Upstream.of(Cached(small, store), "scripted:small-1", alias="small"),
            Upstream.of(Cached(wide, store), "scripted:wide"),
        ],
        **options,  # type: ignore[arg-type]
    )
    return app, small, wide


@pytest.fixture
def cache(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'server-cache.db'}")


@pytest.fixture
def served(cache: Store) -> Iterator[Served]:
    """The server without an API key (loopback), default limits."""
    app, small, wide = build(cache)
    with serving(app) as url:  # type: ignore[arg-type]
        yield Served(url, cache, small, wide)
