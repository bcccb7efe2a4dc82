"""Damaged caches: a clear error with a remedy, or the bad entry re-embedded - never a wrong vector.

Damage is done the way it happens in real life: a file cut short by a full disk or a bad
copy, a file that is not a database at all, a value file deleted from a diskcache folder,
and a vector blob of the wrong length written by raw SQL.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached, StoreError
from cachedembed.stores import close_all
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import same_bits, stats_total

TEXTS = [f"text number {i}" for i in range(2000)]


def expected(texts: list[str], dim: int) -> np.ndarray:
    return np.array([fake_vector(t, dim, "fake-1") for t in texts])


@pytest.fixture(scope="module")
def healthy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed, checkpointed SQLite cache of 2000 entries (about 20 pages of vectors)."""
    path = tmp_path_factory.mktemp("healthy") / "cache.db"
    Cached(FakeEF(dim=64), f"sqlite:///{path}").embed(TEXTS)
    close_all()
    assert not Path(f"{path}-wal").exists()  # everything is in the main file
    return path


def assert_clear_store_error(exc: StoreError, path: Path) -> None:
    message = str(exc)
    assert str(path) in message
    assert "Remedy: move the file aside" in message
    assert "\n" not in message and "sqlalchemy" not in message.lower()
    assert exc.__cause__ is None and exc.__suppress_context__  # no chained traceback soup


@pytest.mark.parametrize("keep", ["50 bytes", "one page", "half", "all but the last page"])
def test_truncated_sqlite_file_gives_a_clear_error_or_exact_vectors(
    healthy_db: Path, tmp_path: Path, keep: str
) -> None:
    path = tmp_path / "cut.db"
    shutil.copy(healthy_db, path)
    size = path.stat().st_size
    os.truncate(
        path,
        {
            "50 bytes": 50,
            "one page": 16384,
            "half": size // 2,
            "all but the last page": size - 16384,
        }[keep],
    )
    ef = FakeEF(dim=64)
    try:
        got = Cached(ef, f"sqlite:///{path}").embed(TEXTS)
    except StoreError as exc:
        assert_clear_store_error(exc, path)
    else:  # SQLite could still read everything it needed: then the answer must be exact
        assert same_bits(got, expected(TEXTS, 64))


@pytest.mark.parametrize(
    "content", [os.urandom(50_000), b"SQLite format 3\x00" + os.urandom(20_000), b"hello\n"]
)
def test_garbage_file_gives_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(content)
    ef = FakeEF()
    with pytest.raises(StoreError) as info:
        Cached(ef, f"sqlite:///{path}").embed(["a"])
    assert_clear_store_error(info.value, path)
    assert ef.calls == []
    assert path.read_bytes() == content  # the user's file is left as it was


def test_empty_file_is_a_new_cache(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    assert same_bits(Cached(FakeEF(), f"sqlite:///{path}").embed(["a"]), expected(["a"], 8))


@pytest.mark.parametrize("length", [0, 3, 4 * 8 - 1, 4 * 8 + 4, 4 * 16])
def test_wrong_length_blob_is_re_embedded_and_replaced(
    sqlite_url: str, tmp_path: Path, length: int
) -> None:
    ef = FakeEF(dim=8)
    wrapper = Cached(ef, sqlite_url, store_text=True)
    wrapper.embed(["a", "b", "c"])
    with sqlite3.connect(tmp_path / "cache.db") as raw:
        raw.execute("UPDATE entries SET vec = ? WHERE text = 'b'", (b"\x01" * length,))
    assert same_bits(wrapper.embed(["a", "b", "c"]), expected(["a", "b", "c"], 8))
    assert ef.texts_embedded == ["a", "b", "c", "b"]  # only the damaged one went back
    with sqlite3.connect(tmp_path / "cache.db") as raw:
        (blob,) = raw.execute("SELECT vec FROM entries WHERE text = 'b'").fetchone()
    assert same_bits(np.frombuffer(blob, "<f4"), fake_vector("b", 8, "fake-1"))  # replaced
    assert same_bits(wrapper.embed(["b"]), expected(["b"], 8))
    assert len(ef.calls) == 2


def test_diskcache_value_file_deleted(tmp_path: Path) -> None:
    # diskcache keeps values of 32 KiB and more in files beside its index database:
    # 16384 float32 dimensions make every vector such a file.
    folder = tmp_path / "dc"
    url = f"diskcache://{folder}"
    dim = 16384
    ef = FakeEF(dim=dim)
    wrapper = Cached(ef, url)
    wrapper.embed(["a", "b", "c"])
    files = sorted(p for p in folder.rglob("*.val"))
    assert len(files) == 3
    files[0].unlink()
    # diskcache reports a vanished value file as a missing key: a miss, re-embedded ...
    assert same_bits(wrapper.embed(["a", "b", "c"]), expected(["a", "b", "c"], dim))
    assert len(ef.texts_embedded) == 4
    # ... and stored again, so the next call is all hits.
    assert len(list(folder.rglob("*.val"))) == 3
    assert same_bits(wrapper.embed(["a", "b", "c"]), expected(["a", "b", "c"], dim))
    assert len(ef.texts_embedded) == 4
    stats = stats_total(wrapper.store)
    assert (stats.misses, stats.hits) == (4, 5)


def test_diskcache_value_file_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "dc"
    dim = 16384
    ef = FakeEF(dim=dim)
    wrapper = Cached(ef, f"diskcache://{folder}")
    wrapper.embed(["a", "b"])
    victim = sorted(folder.rglob("*.val"))[0]
    os.truncate(victim, victim.stat().st_size // 2)
    assert same_bits(wrapper.embed(["a", "b"]), expected(["a", "b"], dim))
    assert len(ef.texts_embedded) == 3
    assert same_bits(wrapper.embed(["a", "b"]), expected(["a", "b"], dim))
    assert len(ef.texts_embedded) == 3
