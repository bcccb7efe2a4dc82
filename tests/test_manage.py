"""Cache management on real SQLite and diskcache caches: models, last use, prune, verify, migrate."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from cachedembed import Cached
from cachedembed.embedding_functions import EmbeddedBatch
from cachedembed.keys import Role
from cachedembed.manage import format_size, list_models, migrate, parse_size, prune, reembed, verify
from cachedembed.stores import Store, open_store
from cachedembed.stores import migrate as schema
from cachedembed.stores.base import EntryBatch
from cachedembed.usage import day_iso, today
from tests.billing import BillingProvider, fill, texts


def used_days(store: Store, ns_id: int) -> dict[int, int]:
    return {e.id: e.used for batch in store.iter_entries(ns_id) for e in batch}


def test_models_lists_each_namespace_with_its_footprint(disk_url: str) -> None:
    store = open_store(disk_url)
    ef = Cached(BillingProvider(dim=6), store)
    ef.embed(texts(12))
    ef.embed(texts(3), "query")
    half = Cached(BillingProvider(dim=6), store, dtype="float16")
    half.embed(texts(5))
    old = fill(store, 4, model="bill-old", dim=3, days=[today() - 40, today() - 9])
    by_key = {(m.model, m.role, m.dtype): m for m in list_models(store)}
    doc = by_key[("bill-small", "document", "float32")]
    assert (doc.provider, doc.dim, doc.entries, doc.bytes) == ("test-billing", 6, 12, 12 * 6 * 4)
    assert doc.parameters == {"dimensions": 6} and doc.hash == "xxh3"
    assert doc.first_used == doc.last_used == day_iso(today())
    assert by_key[("bill-small", "query", "float32")].entries == 3
    assert by_key[("bill-small", "document", "float16")].bytes == 5 * 6 * 2
    aged = by_key[("bill-old", "document", "float32")]
    assert (aged.first_used, aged.last_used, aged.entries) == (
        day_iso(today() - 40),
        day_iso(today() - 9),
        4,
    )
    assert aged.namespace == old.key
    assert [m.model for m in list_models(store, "old")] == ["bill-old"]


def test_a_hit_on_a_later_day_updates_last_use_at_the_next_flush_not_per_hit(
    disk_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(disk_url)
    store.flush_interval = 3600.0  # only explicit flushes, so every write is visible
    provider = BillingProvider()
    ef = Cached(provider, store)
    ef.embed(texts(10))
    ns_id = ef._engine.state("document").ns.id
    assert set(used_days(store, ns_id).values()) == {today()}

    writes = {"_put": 0, "_flush_stats": 0}
    for name in writes:
        original = getattr(store, name)

        def counted(*args: object, _name: str = name, _original: object = original) -> object:
            writes[_name] += 1
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(store, name, counted)
    later = today() + 5
    monkeypatch.setattr("cachedembed._engine.today", lambda: later)
    monkeypatch.setattr("cachedembed.stores.base.today", lambda: later)
    for _ in range(50):
        ef.embed(texts(10)[:6])
    assert writes == {"_put": 0, "_flush_stats": 0}  # 300 hits, no write yet
    assert set(used_days(store, ns_id).values()) == {today()}
    store.flush()
    assert writes == {"_put": 0, "_flush_stats": 1}
    days = used_days(store, ns_id)
    assert sorted(days.values()) == [today()] * 4 + [later] * 6
    assert provider.texts_sent == texts(10)  # all were hits


def test_prune_older_than_removes_entries_not_used_in_the_window(disk_url: str) -> None:
    store = open_store(disk_url)
    ns = fill(store, 300, days=[today() - 45, today() - 30, today() - 29, today()])
    other = fill(store, 40, model="bill-other", days=[today() - 100], seed=3)
    dry = prune(store, older_than="30d", model="bill-small", dry_run=True)
    assert (dry.removed_entries, dry.removed_bytes, dry.dry_run) == (150, 150 * 32, True)
    assert len(used_days(store, ns.id)) == 300
    done = prune(store, older_than="30d", model="bill-small")
    assert done.removed_entries == 150 and done.namespaces[0].kept_entries == 150
    assert sorted(set(used_days(store, ns.id).values())) == [today() - 29, today()]
    assert len(used_days(store, other.id)) == 40  # --model kept it out of scope
    assert prune(store, older_than=day_iso(today() - 99)).removed_entries == 40


def test_prune_max_size_removes_least_recently_used_first(disk_url: str) -> None:
    store = open_store(disk_url)
    ns = fill(
        store, 100, dim=8, days=[today() - 3, today() - 2, today() - 1, today()]
    )  # 32 bytes each
    result = prune(store, max_bytes=parse_size("1.6kB"))
    assert result.removed_entries == 50 and result.kept_bytes == 1600
    assert sorted(set(used_days(store, ns.id).values())) == [today() - 1, today()]
    assert prune(store, max_bytes=10_000).removed_entries == 0
    with pytest.raises(ValueError, match="older-than"):
        prune(store)


def test_prune_keeps_usage_history(disk_url: str) -> None:
    store = open_store(disk_url)
    Cached(BillingProvider(), store).embed(texts(8))
    store.flush()
    before = store.stats_rows()
    assert prune(store, max_bytes=0).removed_entries == 8
    assert store.stats_rows() == before


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GB", 2 * 10**9), ("500MiB", 500 * 2**20), ("1.5g", 1_500_000_000), ("4096", 4096)],
)
def test_sizes_parse_in_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert format_size(2_500_000_000) == "2.5 GB" and format_size(12) == "12 B"


def test_verify_reports_entries_that_do_not_decode_and_fix_removes_them(disk_url: str) -> None:
    store = open_store(disk_url)
    ef = Cached(BillingProvider(dim=6), store)
    good = ef.embed(texts(20))
    ns = ef._engine.state("document").ns
    # Damage: a short blob, and a NaN vector, written straight into the namespace.
    bad_ids = [11, 12]
    store.write_entries(
        ns.id,
        EntryBatch(
            ids=[11], checks=[1], vectors=np.zeros((1, 5), np.float32), tokens=[1], flags=[0]
        ),
    )
    store.write_entries(
        ns.id,
        EntryBatch(
            ids=[12], checks=[2], vectors=np.full((1, 6), np.nan, np.float32), tokens=[1], flags=[0]
        ),
    )
    report = verify(store)
    assert report.checked == 22 and report.removed == 0
    assert sorted((b.id, b.reason) for b in report.bad) == [
        (11, "20 bytes, expected 24 (6 x float32)"),
        (12, "contains NaN or infinite values"),
    ]
    fixed = verify(store, fix=True)
    assert (len(fixed.bad), fixed.removed) == (2, 2)
    assert all(i not in used_days(store, ns.id) for i in bad_ids)
    again = verify(store)
    assert (again.checked, again.bad) == (20, [])
    assert np.array_equal(ef.embed(texts(20)), good)


def test_migrate_upgrades_an_old_sqlite_cache_and_reports_the_revisions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    schema.upgrade(engine, "0001")
    engine.dispose()
    assert migrate(f"sqlite:///{path}") == ("0001", schema.HEAD)
    columns = {
        c["name"] for c in sa.inspect(sa.create_engine(f"sqlite:///{path}")).get_columns("entries")
    }
    assert "text" in columns
    assert migrate(f"sqlite:///{path}") == (schema.HEAD, schema.HEAD)
    assert migrate(f"diskcache://{tmp_path / 'dc'}") == (None, None)


def test_reembed_moves_stored_texts_to_another_model_keeping_roles(disk_url: str) -> None:
    store = open_store(disk_url)
    Cached(BillingProvider(), store, store_text=True).embed(texts(20))
    Cached(BillingProvider(), store, store_text=True).embed(texts(3, "q"), "query")
    Cached(BillingProvider("bill-notext"), store).embed(texts(5))  # no texts kept: cannot move
    large = BillingProvider("bill-large", dim=10)
    result = reembed(store, large, model="bill-small", batch_size=8)
    assert (result.namespaces, result.texts, result.misses, result.hits) == (2, 23, 23, 0)
    assert sorted(large.texts_sent) == sorted(texts(20) + texts(3, "q"))
    # The new namespaces answer the same texts without calling the provider again.
    again = BillingProvider("bill-large", dim=10)
    fresh = Cached(again, store)
    assert fresh.embed(texts(20)).shape == (20, 10) and fresh.embed(
        texts(3, "q"), "query"
    ).shape == (3, 10)
    assert again.billed == []
    rerun = reembed(store, BillingProvider("bill-large", dim=10), model="bill-")
    assert (rerun.texts, rerun.hits, rerun.misses, rerun.without_text) == (23, 23, 0, 5)


def test_reembed_reports_its_own_hits_and_misses_not_other_writers(disk_url: str) -> None:
    store = open_store(disk_url)
    Cached(BillingProvider("bill-small"), store, store_text=True).embed(["a", "b", "c"])
    other_writer = Cached(BillingProvider("bill-large", dim=10), store)
    other_writer.embed(["a"])

    class Interleaved(BillingProvider):
        """While this run embeds, another writer of the same cache makes hits and flushes them."""

        def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
            other_writer.embed(["a"] * 5)
            other_writer.flush()
            yield from super().embed_batches(texts, role)

    result = reembed(store, Interleaved("bill-large", dim=10), model="bill-small")
    assert (result.texts, result.hits, result.misses) == (3, 1, 2)
    assert other_writer.stats()["hits"] == 6  # the cache's lifetime totals count both writers
