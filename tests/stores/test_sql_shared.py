"""The SQL store on real PostgreSQL and MariaDB servers: schema, contract, concurrency, crashes, secrets.

Every test gets its own freshly created database (dropped afterwards). Workers are real
processes and threads writing to the same server, with a deterministic provider so every
stored vector can be checked bit for bit.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.errors import StoreError
from cachedembed.keys import NamespaceSpec
from cachedembed.stores import close_all, migrate, open_store, public_url
from cachedembed.stores.base import EntryBatch, PendingStats
from cachedembed.stores.sql import SqlStore
from cachedembed.usage import UsageDelta
from tests.conftest import FakeEF, fake_vector
from tests.stores.servers import server_database

SERVERS = ["postgresql", "mariadb"]
FORK = mp.get_context("fork")


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL to a brand-new, empty database on each server."""
    with server_database(request.param) as url:
        yield url
        close_all()


def run_in_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    """Run ``target(0..n-1)`` in ``n`` threads at once; return what they raised."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            target(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _spec(model: str = "m") -> NamespaceSpec:
    return NamespaceSpec({"provider": "fake", "model": model}, "document", "float32", "xxh3")


def _batch(
    ids: list[int], dim: int = 4, seed: int = 0, texts: list[str | None] | None = None
) -> EntryBatch:
    vectors = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    return EntryBatch(
        ids=ids,
        checks=[-(2**63) + i for i in range(len(ids))],
        vectors=vectors,
        tokens=[3] * len(ids),
        flags=[1] * len(ids),
        texts=texts,
    )


def _entries(store: SqlStore, ns_id: int) -> list[Any]:
    return [e for page in store.iter_entries(ns_id, batch_size=3) for e in page]


def _totals(store: SqlStore) -> UsageDelta:
    total = UsageDelta()
    for _ns, _day, delta in store.stats_rows():
        total.add(delta)
    return total


# -- schema ------------------------------------------------------------------


def test_migrations_create_the_schema_with_64_bit_ids_and_binary_vectors(server_url: str) -> None:
    store = SqlStore(server_url)
    assert store.schema_revision() == migrate.HEAD
    columns = {c["name"]: c["type"] for c in sa.inspect(store.engine).get_columns("entries")}
    assert {"id", "ns", "chk", "tokens", "flags", "used", "created", "vec", "text"} <= set(columns)
    assert isinstance(columns["id"], sa.BigInteger) and isinstance(columns["chk"], sa.BigInteger)
    vec_type = str(columns["vec"]).upper()
    text_type = str(columns["text"]).upper()
    if store.dialect == "postgresql":
        assert vec_type == "BYTEA"
    else:
        assert vec_type == "MEDIUMBLOB" and text_type == "MEDIUMTEXT"
    # Opening again is a single revision check, not a second migration.
    assert SqlStore(server_url).schema_revision() == migrate.HEAD


def test_concurrent_first_openers_all_succeed_and_migrate_once(server_url: str) -> None:
    barrier = threading.Barrier(6)

    def open_cache(_k: int) -> None:
        barrier.wait()
        SqlStore(server_url).close()

    assert run_in_threads(6, open_cache) == []
    with sa.create_engine(server_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall() == [
            (migrate.HEAD,)
        ]


# -- the store contract --------------------------------------------------------


def test_store_contract_round_trips_extreme_ids_bytes_and_unicode_text(server_url: str) -> None:
    store = SqlStore(server_url)
    ns = store.namespace(_spec())
    ids = [-(2**63), -1, 0, 1, 2**63 - 1]
    texts: list[str | None] = ["naïve 😀", None, "x" * 70_000, "", "日本語"]
    batch = _batch(ids, texts=texts)
    store.write_entries(ns.id, batch)

    rows = {row[0]: row for row in store.lookup(ns.id, [*ids, 42])}
    assert sorted(rows) == sorted(ids)
    for i, vec in zip(ids, batch.vectors, strict=True):
        stored = rows[i][6]
        assert type(stored) is bytes and stored == vec.tobytes()
    assert rows[-(2**63)][2] == -(2**63)  # the check column keeps the full signed range
    assert [r[0] for r in store.lookup(ns.id, [2**63 - 1])] == [2**63 - 1]

    # Insert-or-ignore: a second writer's copy of the same ids is dropped, never an error.
    store.write_entries(ns.id, _batch(ids, seed=1))
    assert store.lookup(ns.id, [0])[0][6] == batch.vectors[2].tobytes()

    exported = _entries(store, ns.id)
    assert [e.id for e in exported] == sorted(ids)
    assert {e.id: e.text for e in exported} == dict(zip(ids, texts, strict=True))
    usage = store.namespace_usage()[ns.id]
    assert (usage.entries, usage.bytes) == (5, 5 * 16)

    assert store.delete(ns.id, [0, 1, 99]) == 2
    assert sorted(r[0] for r in store.lookup(ns.id, ids)) == [-(2**63), -1, 2**63 - 1]


def test_stats_merge_adds_up_and_namespaces_are_shared(server_url: str) -> None:
    first, second = SqlStore(server_url), SqlStore(server_url)
    ns = first.namespace(_spec())
    assert second.namespace(_spec()).id == ns.id
    first.set_dimension(ns, 4)
    assert second.known_dimension(second.namespace(_spec())) == 4
    for store in (first, second):
        store.record(ns.id, UsageDelta(calls=1, hits=5, tokens_saved=7))
        store.write(ns.id, _batch([10, 11]), UsageDelta(misses=2, provider_seconds=0.25))
        store.flush()
    total = _totals(first)
    assert (total.calls, total.hits, total.misses, total.tokens_saved) == (2, 10, 4, 14)
    assert total.provider_seconds == pytest.approx(0.5)


def test_many_writers_lose_no_increments_and_never_fail_on_duplicates(server_url: str) -> None:
    stores = [SqlStore(server_url) for _ in range(2)]
    ns_id = stores[0].namespace(_spec()).id

    def writer(k: int) -> None:
        store = stores[k % 2]
        for round_ in range(15):
            # Overlapping ids in opposite orders: the classic deadlock shape.
            ids = list(range(round_ * 5, round_ * 5 + 40))
            if k % 2:
                ids.reverse()
            store.write(ns_id, _batch(ids), UsageDelta(calls=1, hits=3))
            store.merge_stats(PendingStats(deltas={(ns_id, 20_001): UsageDelta(misses=1)}))

    assert run_in_threads(8, writer) == []
    assert _totals(stores[0]).calls == 8 * 15 and _totals(stores[0]).hits == 8 * 15 * 3
    assert _totals(stores[0]).misses == 8 * 15
    assert stores[0].namespace_usage()[ns_id].entries == 14 * 5 + 40


def test_lookup_and_insert_batches_are_single_statements_on_mariadb() -> None:
    with server_database("mariadb") as url:
        store = SqlStore(url)
        ns_id = store.namespace(_spec()).id
        cur = store._raw().cursor()

        def counter(name: str) -> int:
            cur.execute(f"SHOW SESSION STATUS LIKE '{name}'")
            return int(cur.fetchone()[1])

        inserts = counter("Com_insert")
        store.write_entries(ns_id, _batch(list(range(3000))))
        assert (
            counter("Com_insert") - inserts == 1
        )  # PyMySQL folded 3000 rows into one INSERT IGNORE
        selects = counter("Com_select")
        assert len(store.lookup(ns_id, list(range(-10_000, 10_000)))) == 3000
        assert counter("Com_select") - selects == 1  # 20k ids, one IN list, one round trip
        cur.execute("SELECT @@autocommit, @@tx_isolation")
        assert cur.fetchone() == (1, "READ-COMMITTED")
        close_all()


def _session_query(store: SqlStore) -> str:
    return "SELECT pg_backend_pid()" if store.dialect == "postgresql" else "SELECT CONNECTION_ID()"


def _kill_session(store: SqlStore) -> None:
    """End this thread's server session from the server side, as a restart or idle timeout would."""
    victim = int(store._read(_session_query(store))[0][0])
    with sa.create_engine(store.engine.url).connect() as admin:
        kill = "SELECT pg_terminate_backend(%s)" if store.dialect == "postgresql" else "KILL %s"
        admin.exec_driver_sql(kill % victim)
    time.sleep(0.2)


def test_server_restart_is_survived_by_reconnecting(server_url: str) -> None:
    store = SqlStore(server_url)
    ns_id = store.namespace(_spec()).id
    store.write_entries(ns_id, _batch([1]))
    _kill_session(store)
    assert [r[0] for r in store.lookup(ns_id, [1, 2])] == [1]  # a read reconnects
    _kill_session(store)
    store.write_entries(ns_id, _batch([2]))  # so does a write that finds it dead at BEGIN
    assert store.namespace_usage()[ns_id].entries == 2


def _child_uses_and_closes(wrapper: Cached) -> None:
    wrapper(["from the child"])
    close_all()
    wrapper.store.close()


def test_forked_child_neither_closes_the_parents_session_nor_recounts_its_buffer(
    server_url: str,
) -> None:
    wrapper = Cached(FakeEF(), cache=server_url)
    wrapper(["a", "b"])
    wrapper.store.flush()
    wrapper(["a", "b", "a"])  # three hits, buffered in the parent when it forks
    store = wrapper.store
    assert isinstance(store, SqlStore)
    session = (
        "SELECT pg_backend_pid()" if store.dialect == "postgresql" else "SELECT CONNECTION_ID()"
    )
    before = store._read(session)

    child = FORK.Process(target=_child_uses_and_closes, args=(wrapper,))
    child.start()
    child.join(30)
    assert child.exitcode == 0

    assert (
        store._read(_session_query(store)) == before
    )  # same server session: the child left it alone
    stats = wrapper.stats()
    # Parent: 2 misses, then 3 hits; child: 1 miss. The parent's buffered hits count once.
    assert (stats["hits"], stats["misses"], stats["calls"]) == (3, 3, 3)


def test_connections_of_ended_threads_are_closed(server_url: str) -> None:
    store = SqlStore(server_url)
    ns_id = store.namespace(_spec()).id
    for _ in range(10):  # ten short-lived threads, one lookup each
        assert run_in_threads(1, lambda _k: store.lookup(ns_id, [1, 2])) == []
    if store.dialect == "postgresql":
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    else:
        sessions = "SELECT count(*) FROM information_schema.processlist WHERE db = database()"
    # This thread's connection plus at most the last worker's (a closed session's
    # server process may take a moment to leave the list).
    deadline = time.monotonic() + 5
    while store._read(sessions)[0][0] > 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store._read(sessions)[0][0] <= 2


# -- many processes ------------------------------------------------------------


def _embed_worker(url: str, texts: list[str], seed: int, results: Any) -> None:
    """One process, three threads, one shared Cached: embed shuffled chunks of ``texts``."""
    ef = FakeEF(dim=16)
    wrapper = Cached(ef, cache=url)
    rng = np.random.default_rng(seed)
    requested = [0]
    failures: list[str] = []
    lock = threading.Lock()

    def thread(k: int) -> None:
        order = rng.permutation(len(texts)) if k else np.arange(len(texts))
        for start in range(0, len(order), 37):
            chunk = [texts[i] for i in order[start : start + 37]] * (1 + k % 2)
            vectors = wrapper(chunk)
            for text, vec in zip(chunk, vectors, strict=True):
                if vec.tobytes() != fake_vector(text, 16, ef.model).tobytes():
                    failures.append(f"wrong vector for {text!r}")
            with lock:
                requested[0] += len(chunk)

    failures += [repr(exc) for exc in run_in_threads(3, thread)]
    wrapper.store.flush()
    results.put((requested[0], len(ef.texts_embedded), len(set(ef.texts_embedded)), failures))
    close_all()


@pytest.mark.parametrize("kind", SERVERS)
def test_four_processes_times_three_threads_share_one_cache(kind: str) -> None:
    texts = [f"text {i} ✓" for i in range(300)]
    with server_database(kind) as url:
        SqlStore(url).close()  # schema first, so workers race on data, not DDL
        results = FORK.Queue()
        # Overlapping slices: every text is wanted by two or more processes.
        slices = [texts[0:200], texts[100:300], texts[50:250], texts[::2]]
        procs = [
            FORK.Process(target=_embed_worker, args=(url, part, seed, results))
            for seed, part in enumerate(slices)
        ]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=90) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0

        assert [o[3] for o in outcomes] == [[], [], [], []]
        for _requested, embedded, distinct, _ in outcomes:
            assert embedded == distinct  # single-flight: within a process, never twice
        store = SqlStore(url)
        (ns,) = store.namespaces()
        stored = _entries(store, ns.id)
        assert len(stored) == len(texts)  # every distinct text stored exactly once
        total = _totals(store)
        assert total.hits + total.misses == sum(o[0] for o in outcomes)
        # Across processes two workers may both pay for a text before either stores it.
        assert total.misses == sum(o[1] for o in outcomes) >= len(texts)
        assert total.provider_calls >= 1 and total.calls >= 1


def _endless_writer(url: str, started: Any) -> None:
    wrapper = Cached(FakeEF(dim=64), cache=url, store_text=True, batch_size=50)
    i = 0
    while True:
        wrapper([f"doc {i}-{j}" for j in range(500)])
        started.set()
        i += 1


@pytest.mark.parametrize("kind", SERVERS)
def test_worker_killed_mid_write_leaves_the_database_consistent(kind: str) -> None:
    with server_database(kind) as url:
        SqlStore(url).close()
        started = FORK.Event()
        proc = FORK.Process(target=_endless_writer, args=(url, started))
        proc.start()
        assert started.wait(60)
        time.sleep(0.3)  # well inside the next call's writes
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)

        store = SqlStore(url)
        (ns,) = store.namespaces()
        entries = _entries(store, ns.id)
        assert len(entries) >= 500
        for e in entries:
            assert e.text is not None
            assert e.vec == fake_vector(e.text, 64, "fake-1").tobytes()
        # Each batch's entries and miss counters commit together: never stats ahead of data.
        assert _totals(store).misses == len(entries)
        # And the cache keeps working for the next writer.
        after = Cached(FakeEF(dim=64), cache=url, store_text=True)(["doc 0-0", "fresh text"])
        assert after[1].tobytes() == fake_vector("fresh text", 64, "fake-1").tobytes()


# -- management commands ----------------------------------------------------------


def test_management_commands_work_on_the_server_and_seed_round_trips(
    server_url: str, tmp_path: Path
) -> None:
    texts = [f"seed {i} ✓" for i in range(20)]
    Cached(FakeEF(), cache=server_url, store_text=True)(texts)
    close_all()
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    assert "20" in cli("models", "--cache", server_url)
    assert "checked 20 entries: 0 bad" in cli("verify", "--cache", server_url)
    assert f"schema revision {migrate.HEAD}" in cli("migrate", "--cache", server_url)
    # The documented seeding path, here in reverse too: server -> file -> SQLite.
    dump = str(tmp_path / "seed.jsonl.gz")
    cli("export", "--cache", server_url, dump)
    local = f"sqlite:///{tmp_path / 'local.db'}"
    assert "20 added" in cli("import", "--cache", local, dump)
    assert "0 added, 20 already present" in cli("import", "--cache", server_url, dump)
    ef = FakeEF()
    vectors = Cached(ef, cache=local, store_text=True)(texts)
    assert ef.calls == []
    assert all(
        v.tobytes() == fake_vector(t, 8, ef.model).tobytes()
        for t, v in zip(texts, vectors, strict=True)
    )

    cli("prune", "--cache", server_url, "--max-size", "1B")
    store = SqlStore(server_url)
    assert sum(u.entries for u in store.namespace_usage().values()) == 0


# -- secrets -----------------------------------------------------------------------


def test_passwords_never_appear_in_urls_errors_stats_or_chroma_config() -> None:
    with server_database("postgresql") as url:
        secret = "s3cr3t-Pa55"
        # The servers trust loopback, so the password is accepted and ignored.
        with_password = url.replace("postgres@", f"postgres:{secret}@")
        wrapper = Cached(FakeEF(), cache=with_password)
        wrapper(["hello"])
        assert secret not in wrapper.store.url and "***" in wrapper.store.url
        assert secret not in repr(wrapper)
        config = wrapper.get_config()
        assert secret not in str(config) and "***" not in str(config)
        assert public_url(with_password) == url

        result = CliRunner().invoke(main, ["stats", "--cache", with_password])
        assert result.exit_code == 0, result.output
        assert secret not in result.output and "***" in result.output
        close_all()

    dead = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:1/nothing"
    with pytest.raises(StoreError) as info:
        open_store(dead)
    assert secret not in str(info.value) and "127.0.0.1" in str(info.value)
    result = CliRunner().invoke(main, ["stats", "--cache", dead])
    assert result.exit_code != 0 and secret not in result.output


# -- the network benchmark ------------------------------------------------------------


def test_network_benchmark_measures_every_backend_on_a_small_corpus() -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "sql_network.py"
    spec = importlib.util.spec_from_file_location("sql_network", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(n=300)
    for backend in ("sqlite", "postgresql", "mariadb"):
        assert result[backend]["warm_hit_texts_per_s"] > 0
    assert result["postgresql_vs_sqlite"] > 0
