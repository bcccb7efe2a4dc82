"""A cache deleted under a running process is noticed, never written into silently.

SQLite (and diskcache on top of it) keeps writing into a file that was deleted while open:
every entry written after that vanishes with the process. Writes check that the file is
still the one opened: with ``on_store_error="warn"`` the call returns its vectors and the
failure is counted and logged with the remedy; with ``"raise"`` it raises ``StoreError``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from cachedembed import Cached, StoreError
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import same_bits


def delete_cache(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        for path in tmp_path.glob("cache.db*"):
            path.unlink()
    else:
        shutil.rmtree(tmp_path / "dc")


def url_for(backend: str, tmp_path: Path) -> str:
    return {
        "sqlite": f"sqlite:///{tmp_path / 'cache.db'}",
        "diskcache": f"diskcache://{tmp_path / 'dc'}",
    }[backend]


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_writes_into_a_deleted_cache_are_refused_and_reported(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ef = FakeEF()
    wrapper = Cached(ef, url_for(backend, tmp_path))
    wrapper.embed(["before"])
    delete_cache(backend, tmp_path)
    caplog.set_level(logging.WARNING, logger="cachedembed")

    result = wrapper.embed_with_usage(["after"])
    assert same_bits(result.vectors[0], fake_vector("after", ef.dim, ef.model))
    assert result.store_errors == 1
    warned = [r.getMessage() for r in caplog.records if r.name == "cachedembed"]
    assert (
        len(warned) == 1
        and "was deleted or replaced" in warned[0]
        and "Remedy: restart" in warned[0]
    )

    strict = Cached(ef, wrapper.store, on_store_error="raise")
    with pytest.raises(StoreError, match="was deleted or replaced"):
        strict.embed(["after, strictly"])
