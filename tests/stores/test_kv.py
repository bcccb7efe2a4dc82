"""Key-value stores: the diskcache store's batched reads return exactly what per-key reads do."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cachedembed import Cached
from cachedembed.stores import open_store
from cachedembed.stores.kv import DiskCacheStore, _KeyValueStore
from tests.conftest import FakeEF, fake_vector


def test_batched_diskcache_reads_match_per_key_reads(tmp_path: Path) -> None:
    url = f"diskcache://{tmp_path / 'dc'}"
    ef = Cached(FakeEF(), url, store_text=True)
    texts = [f"text {i}" for i in range(40)]
    ef(texts)
    store = open_store(url)
    assert isinstance(store, DiskCacheStore)
    (ns,) = store.namespaces()
    ids = [e.id for batch in store.iter_entries(ns.id) for e in batch] + [12345]  # one absent
    batched = store.lookup(ns.id, ids)
    one_by_one = _KeyValueStore._get_rows(store, ns.id, ids)
    assert len(batched) == 40
    assert sorted(batched) == sorted(one_by_one)


def test_vectors_diskcache_keeps_in_files_are_read_too(tmp_path: Path) -> None:
    # 9,000 float32 = 36 KB: above diskcache's inline limit, so the value lives in a file.
    url = f"diskcache://{tmp_path / 'dc'}"
    fake = FakeEF(dim=9000)
    Cached(fake, url)(["big one", "big two"])
    out = Cached(FakeEF(dim=9000), url).embed(["big one", "big two", "big one"])
    assert len(fake.calls) == 1
    expected = [fake_vector(t, 9000, "fake-1") for t in ("big one", "big two", "big one")]
    assert np.array_equal(out, np.stack(expected))
