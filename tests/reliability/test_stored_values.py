"""What is stored is what will be served: no value the cache cannot reproduce, no mixed dimensions.

Two ways a valid provider answer could still leave a bad entry: the compact float16
mode rounding a large value to infinity, and a second process writing vectors of another
dimension into a namespace whose dimension another process already fixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached, ProviderResponseError
from cachedembed.stores import open_store
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import all_entries, same_bits


class Loud(FakeEF):
    """Valid float32 vectors whose values overflow float16 (largest finite: 65504)."""

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return [v * np.float32(1e5) for v in super().__call__(input)]


def test_float16_overflow_is_refused_not_stored_as_infinity(sqlite_url: str) -> None:
    wrapper = Cached(Loud(), sqlite_url, dtype="float16", store_text=True)
    with pytest.raises(ProviderResponseError, match="float16"):
        wrapper.embed(["big values"])
    assert all_entries(wrapper.store) == []
    # float32 storage holds the same answer exactly.
    exact = Cached(Loud(), sqlite_url, store_text=True)
    assert same_bits(
        exact.embed(["big values"])[0], fake_vector("big values", 8, "fake-1") * np.float32(1e5)
    )


def test_float16_serves_what_it_stored(sqlite_url: str) -> None:
    ef = FakeEF()
    wrapper = Cached(ef, sqlite_url, dtype="float16")
    first = wrapper.embed(["a", "b"])
    again = wrapper.embed(["a", "b"])
    want = (
        np.array([fake_vector(t, 8, "fake-1") for t in "ab"]).astype(np.float16).astype(np.float32)
    )
    assert same_bits(first, want) and same_bits(again, want)
    assert len(ef.calls) == 1


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_a_second_process_cannot_write_another_dimension(tmp_path: Path, backend: str) -> None:
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if backend == "sqlite"
        else f"diskcache://{tmp_path / 'dc'}"
    )
    # Two independent store handles stand for two processes. Both resolve the namespace
    # before any vector exists, so neither has seen a dimension yet.
    first = Cached(
        FakeEF(dim=8), open_store(url, shared=False), namespace="shared-model", store_text=True
    )
    second = Cached(
        FakeEF(dim=4), open_store(url, shared=False), namespace="shared-model", store_text=True
    )
    first._engine.state("document")
    second._engine.state("document")
    first.embed(["written at 8 dimensions"])
    # The other "process" got 4-d vectors for the same namespace (an option changed
    # without changing the namespace): refused, and nothing of it is stored.
    with pytest.raises(ProviderResponseError, match="4-d vectors but this namespace holds 8-d"):
        second.embed(["written at 4 dimensions"])
    assert [e.text for e in all_entries(first.store)] == ["written at 8 dimensions"]
    assert first.embed(["written at 8 dimensions"]).shape == (1, 8)
