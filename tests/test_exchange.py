"""Export/import: a cache moves between SQLite, diskcache and memory bit-exactly, idempotently."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached, InvalidInputError
from cachedembed.exchange import export_cache, import_cache
from cachedembed.stores import Store, close_all, open_store
from cachedembed.usage import UsageDelta
from tests.billing import BillingProvider, texts
from tests.stores.servers import postgres_database


def snapshot(store: Store) -> dict[str, Any]:
    """Everything that must survive a move, keyed by namespace key (store ids differ)."""
    store.flush()
    out: dict[str, Any] = {}
    ids = {}
    for ns in store.namespaces():
        ids[ns.id] = ns.key
        entries = sorted(
            (e.id, e.check, e.tokens, e.flags, e.used, e.created, e.vec, e.text)
            for batch in store.iter_entries(ns.id)
            for e in batch
        )
        out[ns.key] = {"spec": ns.spec.canonical, "dim": ns.dim, "entries": entries, "stats": {}}
    for ns_id, day, delta in store.stats_rows():
        out[ids[ns_id]]["stats"][day] = delta.as_tuple()
    return out


@pytest.fixture
def source(tmp_path: Path) -> Store:
    """A SQLite cache with documents (texts kept), queries, a float16 namespace and history."""
    store = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    Cached(BillingProvider(), store, store_text=True).embed([*texts(40), "ünïcödé ✓", "tab\there"])
    Cached(BillingProvider(), store).embed(texts(5, "q"), "query")
    Cached(BillingProvider("bill-large", dim=10), store, dtype="float16").embed(texts(9))
    Cached(BillingProvider(), store, store_text=True).embed(texts(40))  # hits: stats to carry over
    store.flush()
    return store


def test_a_cache_survives_sqlite_to_diskcache_to_memory_to_sqlite_bit_exact(
    source: Store, tmp_path: Path
) -> None:
    original = snapshot(source)
    assert len(original) == 3 and sum(len(ns["entries"]) for ns in original.values()) == 42 + 5 + 9
    hops = [
        f"diskcache://{tmp_path / 'dc'}",
        f"memory://{tmp_path.name}",
        f"sqlite:///{tmp_path / 'back.db'}",
    ]
    current = source
    for n, url in enumerate(hops):
        file = tmp_path / f"hop{n}.jsonl.gz"
        summary = export_cache(current, file)
        assert (summary.namespaces, summary.entries, summary.texts) == (3, 56, 42)
        target = open_store(url)
        imported = import_cache(target, file)
        assert (imported.entries_added, imported.entries_present, imported.namespaces_created) == (
            56,
            0,
            3,
        )
        assert snapshot(target) == original
        current = target


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of its own (dropped afterwards); fails if the server is down."""
    with postgres_database() as url:
        yield url
        close_all()


def test_a_cache_moves_through_postgresql_bit_exact(
    source: Store, tmp_path: Path, postgres_url: str
) -> None:
    original = snapshot(source)
    export_cache(source, tmp_path / "to-pg.gz")
    pg = open_store(postgres_url)
    assert import_cache(pg, tmp_path / "to-pg.gz").entries_added == 56
    assert import_cache(pg, tmp_path / "to-pg.gz").entries_present == 56
    assert snapshot(pg) == original
    export_cache(pg, tmp_path / "from-pg.gz")
    back = open_store(f"diskcache://{tmp_path / 'dc'}")
    import_cache(back, tmp_path / "from-pg.gz")
    assert snapshot(back) == original


def test_an_imported_cache_serves_hits_without_calling_the_provider(
    source: Store, tmp_path: Path
) -> None:
    export_cache(source, tmp_path / "c.gz")
    target = open_store(f"diskcache://{tmp_path / 'dc'}")
    import_cache(target, tmp_path / "c.gz")

    def totals() -> UsageDelta:
        target.flush()
        delta = UsageDelta()
        for _ns, _day, d in target.stats_rows():
            delta.add(d)
        return delta

    before = totals()
    provider = BillingProvider()
    want = Cached(BillingProvider(), source).embed(texts(40))
    got = Cached(provider, target).embed(texts(40))
    assert provider.billed == [] and got.tobytes() == want.tobytes()
    # The source's one warm pass over these 40 texts saved what the new machine saves now:
    # the token counts recorded on the old machine came along.
    after = totals()
    assert (before.hits, after.hits) == (40, 80)
    assert after.tokens_saved == 2 * before.tokens_saved > 0


def test_import_twice_changes_nothing(source: Store, tmp_path: Path) -> None:
    export_cache(source, tmp_path / "c.gz")
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    first = import_cache(target, tmp_path / "c.gz")
    after_first = snapshot(target)
    second = import_cache(target, tmp_path / "c.gz")
    assert (second.entries_added, second.entries_present) == (0, 56)
    assert (second.stats_added, second.stats_skipped) == (0, first.stats_added)
    assert snapshot(target) == after_first


def test_stats_modes_new_add_and_none(source: Store, tmp_path: Path) -> None:
    export_cache(source, tmp_path / "c.gz")
    original = snapshot(source)

    def totals(store: Store) -> list[tuple[float, ...]]:
        return sorted(s for ns in snapshot(store).values() for s in ns["stats"].values())

    into_itself = import_cache(source, tmp_path / "c.gz")  # default "new": today's rows exist
    assert into_itself.stats_added == 0 and snapshot(source) == original
    merged = open_store(f"sqlite:///{tmp_path / 'merged.db'}")
    import_cache(merged, tmp_path / "c.gz", stats="add")
    import_cache(merged, tmp_path / "c.gz", stats="add")  # two machines' worth of history
    assert totals(merged) == sorted(tuple(2 * v for v in t) for t in totals(source))
    bare = open_store(f"memory://{tmp_path.name}-bare")
    import_cache(bare, tmp_path / "c.gz", stats="none")
    assert bare.stats_rows() == []


def test_export_filters_by_model_and_has_a_versioned_header(source: Store, tmp_path: Path) -> None:
    summary = export_cache(source, tmp_path / "large.gz", model="bill-large")
    assert (summary.namespaces, summary.entries, summary.texts) == (1, 9, 0)
    with gzip.open(tmp_path / "large.gz", "rt") as fh:
        lines = [json.loads(line) for line in fh]
    assert lines[0]["format"] == "cachedembed-export" and lines[0]["version"] == 1
    assert lines[0]["source"] == source.url
    assert (
        lines[1]["type"] == "namespace"
        and lines[1]["spec"]["dtype"] == "float16"
        and lines[1]["dim"] == 10
    )
    assert lines[-1] == {"type": "end", "namespaces": 1, "entries": 9, "stats": 1}
    entry = next(r for r in lines if r["type"] == "entry")
    assert len(entry["vec"]) == 28  # base64 of 10 float16 values = 20 bytes


def _rewrite(src: Path, dst: Path, edit: Any) -> None:
    with gzip.open(src, "rt") as fh:
        lines = [json.loads(line) for line in fh]
    with gzip.open(dst, "wt") as fh:
        for record in edit(lines):
            fh.write(json.dumps(record) + "\n")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:-1], "truncated"),
        (lambda lines: lines[:-5] + lines[-1:], "end record promises"),
        (lambda lines: [{**lines[0], "version": 99}, *lines[1:]], "version 99"),
        (
            lambda lines: [
                r if r["type"] != "entry" else {**r, "vec": r["vec"][:-8]} for r in lines
            ],
            "bytes, expected",
        ),
        (
            lambda lines: [
                r if r["type"] != "namespace" else {**r, "key": "0" * 32} for r in lines
            ],
            "does not match its spec",
        ),
    ],
    ids=["no-end", "missing-lines", "future-version", "short-vector", "forged-key"],
)
def test_a_bad_file_is_refused_before_anything_is_written(
    source: Store, tmp_path: Path, edit: Any, message: str
) -> None:
    export_cache(source, tmp_path / "good.gz")
    _rewrite(tmp_path / "good.gz", tmp_path / "bad.gz", edit)
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    with pytest.raises(InvalidInputError, match=message):
        import_cache(target, tmp_path / "bad.gz")
    assert target.namespaces() == [] and target.stats_rows() == []


def test_not_an_export_at_all(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match="not a readable cachedembed export"):
        import_cache(open_store(f"memory://{tmp_path.name}"), tmp_path / "plain.txt")


def test_a_namespace_with_another_dimension_in_the_target_is_refused(
    source: Store, tmp_path: Path
) -> None:
    export_cache(source, tmp_path / "c.gz")
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    ns = target.namespace(source.namespaces()[0].spec)
    target.set_dimension(ns, 99)
    with pytest.raises(InvalidInputError, match="99-d vectors"):
        import_cache(target, tmp_path / "c.gz")
    assert len(target.namespaces()) == 1 and sum(len(b) for b in target.iter_entries(ns.id)) == 0


def test_a_failed_export_leaves_no_file(
    source: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ns_id: int, batch_size: int = 2000) -> Any:
        yield from ()
        raise OSError("disk went away")

    monkeypatch.setattr(source, "iter_entries", broken)
    with pytest.raises(OSError):
        export_cache(source, tmp_path / "x.gz")
    assert list(tmp_path.glob("x.gz*")) == []


def test_vectors_round_trip_as_stored_bytes(source: Store, tmp_path: Path) -> None:
    export_cache(source, tmp_path / "c.gz")
    target = open_store(f"memory://{tmp_path.name}-v")
    import_cache(target, tmp_path / "c.gz")
    ns = next(n for n in target.namespaces() if n.spec.dtype == "float16")
    stored = [np.frombuffer(e.vec, "<f2") for b in target.iter_entries(ns.id) for e in b]
    assert len(stored) == 9 and all(v.shape == (10,) for v in stored)
