"""Long names and identities work on every backend alike.

A ``name()`` or model name longer than the database's label columns, or an identity of
tens of kilobytes (a config holding a long instruction), is stored, found again after
reopening and listed in full on SQLite, PostgreSQL, MariaDB and diskcache: the labels
are cut the same way everywhere and the identity itself is kept whole. Past one limit
shared by every backend (:data:`MAX_IDENTITY_BYTES`) an identity is refused before
anything is written, with the remedy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.errors import ConfigurationError
from cachedembed.stores import close_all, open_store
from cachedembed.stores.base import MAX_IDENTITY_BYTES
from tests.conftest import fake_vector
from tests.reliability._helpers import fresh_cache_url, same_bits

BACKENDS = ["sqlite", "diskcache", "postgresql", "mariadb"]


class LongNamedEF:
    """A Chroma-style function with a 150-character name and a large config."""

    def __init__(self, model: str, instruction: str) -> None:
        self.model = model
        self.instruction = instruction

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return [fake_vector(t, 8, self.model) for t in input]

    @staticmethod
    def name() -> str:
        return "n" * 150

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model, "instruction": self.instruction}


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_names_and_identities_are_stored_and_found_again(backend: str, tmp_path: Path) -> None:
    texts = ["alpha", "beta"]
    with fresh_cache_url(backend, tmp_path) as url:
        # Two models alike in their first 300 characters: their labels must stay apart.
        models = ["m" * 300 + "-one", "m" * 300 + "-two"]
        instruction = "é" * 20_000  # 40 KB of UTF-8, beyond any VARCHAR
        for model in models:
            Cached(LongNamedEF(model, instruction), url).embed(texts)
        close_all()

        store = open_store(url)
        spaces = store.namespaces()
        assert sorted(ns.spec.model for ns in spaces) == models
        assert {ns.spec.identity["config"]["instruction"] for ns in spaces} == {instruction}
        assert {ns.spec.provider for ns in spaces} == {LongNamedEF.name()}
        for model in models:
            ef = LongNamedEF(model, instruction)
            wrapper = Cached(ef, url)
            got = wrapper.embed(texts)
            assert same_bits(got, np.stack([fake_vector(t, 8, model) for t in texts]))
            assert wrapper.stats()["hits"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_identity_over_the_shared_limit_is_refused_before_anything_is_written(
    backend: str, tmp_path: Path
) -> None:
    with fresh_cache_url(backend, tmp_path) as url:
        wrapper = Cached(LongNamedEF("big", "x" * MAX_IDENTITY_BYTES), url)
        with pytest.raises(ConfigurationError, match="over the 60,000-byte limit: pass a shorter"):
            wrapper.embed(["alpha"])
        assert open_store(url).namespaces() == []
