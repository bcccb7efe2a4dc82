"""A cache server that stops, restarts or drops connections never fails a call.

Against servers of the test's own (a ``redis-server`` and an ``initdb`` PostgreSQL
cluster on free ports, never the shared ones), stopped and started mid-run like an
operator or a crash would: every call returns the provider's exact vectors while the
store is down; the outage shows in ``stats()["store_errors"]`` and the store's health;
the store is skipped between probes (no connection attempt per call); the batches paid
for during the outage are written once it answers again, and hits are served again.
A killed connection is replaced without the call noticing. ``on_store_error="raise"``
keeps the strict behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached, StoreError
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import same_bits
from tests.stores.servers import OwnPostgres, OwnRedis, own_postgres, own_redis, unique_name


class Server:
    """One of our own servers, stopped and started by the test."""

    def __init__(self, kind: str, server: OwnRedis | OwnPostgres) -> None:
        self.kind = kind
        self.server = server
        self.url = server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    def kill_connections(self) -> None:
        """End every client connection from the server's side."""
        if isinstance(self.server, OwnPostgres):
            assert self.server.terminate_clients() >= 1
            return
        import redis

        admin = redis.Redis.from_url(self.url)
        try:
            assert int(admin.client_kill_filter(_type="normal", skipme=True)) >= 1
        finally:
            admin.close()


@pytest.fixture(scope="module", params=["redis", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    if request.param == "redis":
        folder = tmp_path_factory.mktemp("redis")
        # An append-only file synced on every write: a restarted server has its data back.
        with own_redis(str(folder), "--appendonly", "yes", "--appendfsync", "always") as redis:
            yield Server("redis", redis)
    else:
        with own_postgres() as pg:
            yield Server("postgresql", pg)


def texts(prefix: str, n: int = 12) -> list[str]:
    return [f"{prefix} text {i}" for i in range(n)]


def expected(ef: FakeEF, batch: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t, ef.dim, ef.model) for t in batch])


def fresh(url: str, **options: Any) -> tuple[FakeEF, Cached]:
    ef = FakeEF(model=unique_name("model"))
    return ef, Cached(ef, url, **options)


def check(wrapper: Cached, ef: FakeEF, batch: list[str]) -> None:
    assert same_bits(wrapper.embed(batch), expected(ef, batch))


# Slow: starts its own redis-server and initdb PostgreSQL cluster (the `server` fixture).
@pytest.mark.slow
def test_a_stopped_server_costs_no_call_and_gets_the_outage_written_after_it(
    server: Server,
) -> None:
    ef, wrapper = fresh(server.url)
    before, during, only_during = texts("before"), texts("during"), texts("only during", 5)
    check(wrapper, ef, before)

    with server.down():
        check(wrapper, ef, before)  # hits of a store that is down: served by the provider
        check(wrapper, ef, during)
        check(wrapper, ef, [only_during[0]])  # the one-text (search query) path
        check(wrapper, ef, only_during)
        check(wrapper, ef, during)
        stats = wrapper.stats()  # from this process's counters: the store cannot be read
        assert stats["store_errors"] > 0
        health = wrapper.store.outage.health()
        assert health["status"] == "failing" and server.url.split("@")[-1] in health["error"]
        assert health["unsaved_entries"] >= len(during) + len(only_during)

    wrapper.store.outage.probe_now()  # the server is back: no need to wait for the next probe
    ef.calls.clear()
    check(wrapper, ef, during)  # its first write after the outage writes what was kept, too
    assert wrapper.store.outage.health()["status"] == "ok"
    assert wrapper.store.outage.health()["unsaved_entries"] == 0

    ef.calls.clear()
    check(wrapper, ef, [*before, *during, *only_during])
    assert ef.calls == []
    # Another process sees them: the texts embedded only during the outage were stored.
    other_ef = FakeEF(model=ef.model)
    assert same_bits(Cached(other_ef, server.url).embed(only_during), expected(ef, only_during))
    assert other_ef.calls == []


# Slow: starts its own redis-server and initdb PostgreSQL cluster (the `server` fixture).
@pytest.mark.slow
def test_calls_during_an_outage_try_the_store_once_per_probe_not_once_per_call(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ef, wrapper = fresh(server.url)
    check(wrapper, ef, texts("warm"))
    store = wrapper.store
    # A probe a minute: every call of this test falls in the first wait.
    monkeypatch.setattr(store.outage.reads, "first_wait", 60.0)
    monkeypatch.setattr(store.outage.writes, "first_wait", 60.0)
    tried: list[str] = []
    get, put, claim = store._get_rows, store._put, store.claim_leases
    monkeypatch.setattr(store, "_get_rows", lambda *a: (tried.append("get"), get(*a))[1])
    monkeypatch.setattr(store, "_put", lambda *a: (tried.append("put"), put(*a))[1])
    monkeypatch.setattr(store, "claim_leases", lambda *a: (tried.append("claim"), claim(*a))[1])
    with server.down():
        for i in range(10):
            check(wrapper, ef, texts(f"outage {i}", 3))
        # The first failure of each kind (a lease claim leaves the breaker to the write); then skipped.
        assert tried == ["get", "claim", "put"]
        assert len(ef.texts_embedded) == 12 + 30
    store.outage.probe_now()
    check(wrapper, ef, texts("after"))
    assert store.outage.health()["status"] == "ok"


# Slow: starts its own redis-server and initdb PostgreSQL cluster (the `server` fixture).
@pytest.mark.slow
def test_a_killed_connection_is_replaced_without_failing_or_missing_a_call(
    server: Server,
) -> None:
    ef, wrapper = fresh(server.url)
    warm = texts("warm")
    check(wrapper, ef, warm)
    errors = wrapper.store.store_errors
    for batch in (warm, [warm[0]]):
        server.kill_connections()
        ef.calls.clear()
        check(wrapper, ef, batch)
        assert ef.calls == []  # served from the cache, through a new connection
    server.kill_connections()
    new = texts("new")
    check(wrapper, ef, new)  # and written through one
    ef.calls.clear()
    check(wrapper, ef, new)
    assert ef.calls == []
    assert wrapper.store.store_errors == errors


# Slow: starts its own redis-server and initdb PostgreSQL cluster (the `server` fixture).
@pytest.mark.slow
def test_a_model_first_used_during_an_outage_is_served_and_cached_after_it(
    server: Server,
) -> None:
    _, warm = fresh(server.url)  # the store is open in this process already
    check(warm, warm.ef, ["x"])
    ef = FakeEF(model=unique_name("model"))
    batch = texts("new model")
    with server.down():
        wrapper = Cached(ef, server.url)  # built during the outage, on the open store
        check(wrapper, ef, batch)
        check(wrapper, ef, batch)
    wrapper.store.outage.probe_now()
    check(wrapper, ef, batch)  # its namespace is created now, and the batch stored
    ef.calls.clear()
    check(wrapper, ef, batch)
    assert ef.calls == []


# Slow: starts its own redis-server and initdb PostgreSQL cluster (the `server` fixture).
@pytest.mark.slow
def test_raise_mode_fails_the_call_with_store_error_while_the_server_is_down(
    server: Server,
) -> None:
    ef, wrapper = fresh(server.url, on_store_error="raise")
    check(wrapper, ef, texts("warm"))
    with server.down():
        with pytest.raises(StoreError, match=r"Remedy|skipped while it is failing"):
            wrapper.embed(texts("warm"))
        with pytest.raises(StoreError):
            wrapper.embed(texts("new"))
    wrapper.store.outage.probe_now()
    check(wrapper, ef, texts("new"))


def test_a_killed_mariadb_connection_is_replaced_without_failing_or_missing_a_call() -> None:
    # The shared MariaDB is never stopped: only this test's own session is killed.
    import pymysql

    from cachedembed.stores import SqlStore
    from tests.stores.servers import MYSQL_HOST, server_database

    with server_database("mariadb") as url:
        ef, wrapper = fresh(url)
        warm = texts("warm")
        check(wrapper, ef, warm)
        store = wrapper.store
        assert isinstance(store, SqlStore)
        admin = pymysql.connect(**MYSQL_HOST, autocommit=True)
        try:
            for batch, cached in ((warm, True), ([warm[0]], True), (texts("new"), False)):
                session = store._raw().driver_connection.thread_id()
                with admin.cursor() as cur:
                    cur.execute(f"KILL {int(session)}")
                ef.calls.clear()
                check(wrapper, ef, batch)
                assert (ef.calls == []) == cached  # hits through a new connection; or written
        finally:
            admin.close()
        ef.calls.clear()
        check(wrapper, ef, texts("new"))
        assert ef.calls == [] and store.store_errors == 0


# Slow: starts its own redis-server and initdb PostgreSQL cluster (the `server` fixture).
@pytest.mark.slow
def test_a_process_started_while_the_server_is_down_answers_and_caches_once_it_is_back(
    server: Server,
) -> None:
    # A URL no store of this process has opened yet: this wrapper must open it itself.
    param = "prefix" if server.kind == "redis" else "application_name"
    url = f"{server.url}{'&' if '?' in server.url else '?'}{param}={unique_name()}"
    during, after = texts("cold start"), texts("cold start, later")
    with server.down():
        ef, wrapper = fresh(url)
        check(wrapper, ef, during)
        check(wrapper, ef, [during[0]])  # the one-text path too
        assert wrapper.stats()["store_errors"] > 0
        assert wrapper.store.outage.health()["status"] == "failing"

    wrapper.store.outage.probe_now()
    # The namespace could not be resolved while the cache was unreachable, so nothing of
    # the outage could be kept for it: those texts are embedded (and cached) once more.
    check(wrapper, ef, [*during, *after])
    assert wrapper.store.outage.health()["status"] == "ok"
    ef.calls.clear()
    check(wrapper, ef, [*during, *after])
    assert ef.calls == []  # all hits
    assert wrapper.session_stats()["misses"] == 2 * len(during) + 1 + len(after)


def test_a_local_cache_that_cannot_be_opened_still_fails_at_once(tmp_path: Any) -> None:
    # No server to wait for: a bad path is the user's to fix, not an outage to ride out.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for url in (f"sqlite:///{blocker}/cache.db", f"diskcache://{blocker}/dir"):
        with pytest.raises(StoreError, match="cannot create"):
            Cached(FakeEF(), url)
