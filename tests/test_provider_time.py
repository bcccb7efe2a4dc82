"""Provider time is the provider's: a local model's load is not counted in ``provider_seconds``.

Load time is paid once per process. Counted as provider time it would inflate ``time spent``
and, through the seconds per text, every later ``time saved``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from cachedembed import Cached
from cachedembed.embedding_functions import EmbeddedBatch, ProviderEmbeddingFunction
from cachedembed.embedding_functions._base import as_matrix
from cachedembed.keys import Role
from tests.conftest import fake_vector

LOAD_SECONDS = 1.0


class SlowLoadingModel(ProviderEmbeddingFunction):
    """An in-process model that loads lazily, as the sentence-transformers functions do, and slowly."""

    provider = "test-slow-load"
    batch_size = 2

    def __init__(self, late_chunking: bool = False) -> None:
        self.bypass_cache = late_chunking
        self.loaded_in: float | None = None

    def prepare(self) -> None:
        if self.loaded_in is None:
            started = time.perf_counter()
            time.sleep(LOAD_SECONDS)  # stands for reading weights from disk
            self.loaded_in = time.perf_counter() - started

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        self.prepare()  # a model used without Cached still loads on first use
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            yield EmbeddedBatch(
                start, as_matrix(self.provider, [fake_vector(t) for t in chunk], len(chunk)), None
            )

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {"provider": self.provider, "model": "slow-1"}

    def get_config(self) -> dict[str, Any]:
        return {}


def assert_load_not_timed(model: SlowLoadingModel, seconds: float) -> None:
    """``seconds`` of provider time are the embedding's alone: far below the load's."""
    assert model.loaded_in is not None and model.loaded_in >= LOAD_SECONDS
    assert seconds < model.loaded_in / 4


def test_a_models_load_is_not_counted_as_provider_time(sqlite_url: str) -> None:
    model = SlowLoadingModel()
    embedded = Cached(model, sqlite_url).embed_with_usage(["a", "b", "c"])
    assert len(embedded.provider_seconds) == 2  # one duration per batch, the first one included
    assert_load_not_timed(model, sum(embedded.provider_seconds))
    stats = Cached(SlowLoadingModel(), sqlite_url).stats()
    assert stats["provider_calls"] == 2
    assert_load_not_timed(model, stats["provider_seconds"])


def test_a_models_load_is_not_timed_when_every_call_goes_to_the_provider(sqlite_url: str) -> None:
    model = SlowLoadingModel(late_chunking=True)
    with pytest.warns(UserWarning, match="not cached per text"):
        embedded = Cached(model, sqlite_url).embed_with_usage(["a", "b", "c"])
    assert len(embedded.provider_seconds) == 2
    assert_load_not_timed(model, sum(embedded.provider_seconds))
