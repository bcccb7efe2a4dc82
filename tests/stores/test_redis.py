"""The Redis store on real servers: URLs and secrets, prefixes, round trips, atomic counters,
TTL, eviction, restarts without persistence, and Redis Cluster.

Contract tests shared with the other stores run on Redis through the ``cache_url`` and
``disk_url`` fixtures; this file covers what is Redis's own. Tests on the shared server
(127.0.0.1:6379) each use a fresh key prefix; tests that restart, fill up or reconfigure
a server start their own ``redis-server`` on a free port.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.errors import ConfigurationError, StoreError
from cachedembed.exchange import export_cache
from cachedembed.manage import list_models
from cachedembed.stores import close_all, open_store, public_url
from cachedembed.stores.base import EntryBatch, PendingStats
from cachedembed.stores.redis import RedisStore, parse_ttl
from cachedembed.usage import UsageDelta, today
from tests.conftest import FakeEF, fake_vector
from tests.stores.servers import REDIS, OwnRedis, own_redis, redis_prefix, unique_name


@pytest.fixture
def url() -> Iterator[str]:
    with redis_prefix() as fresh:
        yield fresh


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS)
    yield client
    client.close()


def expected(texts: list[str], model: str = "fake-1") -> np.ndarray:
    return np.stack([fake_vector(t, 8, model) for t in texts])


def prefix_of(url: str) -> str:
    return url.split("prefix=")[1]


def test_a_redis_cache_serves_exact_vectors_across_processes_stores(url: str) -> None:
    texts = [f"text {i}" for i in range(50)]
    first = FakeEF()
    assert np.array_equal(Cached(first, url).embed(texts), expected(texts))
    again = FakeEF()
    other_client = RedisStore(url)  # a second client, as another host would have
    try:
        assert np.array_equal(Cached(again, other_client).embed(texts[::-1]), expected(texts[::-1]))
    finally:
        other_client.close()
    assert again.calls == []


def test_key_prefixes_keep_applications_apart(url: str) -> None:
    with redis_prefix() as neighbour:
        Cached(FakeEF(), url)(["shared text"])
        theirs = FakeEF()
        Cached(theirs, neighbour)(["shared text"])
        assert theirs.calls == [["shared text"]]
        assert [m.entries for m in list_models(open_store(neighbour))] == [1]
        assert len(open_store(url).namespaces()) == 1


def test_every_key_lives_under_the_prefix(url: str, raw: redis.Redis) -> None:
    ef = Cached(FakeEF(), url)
    ef(["a", "b"])
    ef.stats()
    prefix = prefix_of(url)
    keys = [k.decode() for k in raw.scan_iter(match=f"{prefix}:*")]
    assert keys and all(k.startswith(prefix + ":") for k in keys)
    assert sum(k.startswith(f"{prefix}:e:") for k in keys) == 2


def test_a_warm_batch_is_one_round_trip(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"text {i}" for i in range(3000)]
    ef = Cached(FakeEF(), url)
    ef.embed(texts)
    ef.store.flush_interval = 3600.0  # hit counters stay buffered: only the lookup talks
    sent: list[int] = []
    original = redis.connection.Connection.send_packed_command

    def counting(
        self: redis.connection.Connection, command: object, check_health: bool = True
    ) -> None:
        sent.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    assert np.array_equal(ef.embed(texts), expected(texts))
    assert len(sent) == 1
    sent.clear()
    assert np.array_equal(ef.embed(["text 7"]), expected(["text 7"]))
    assert len(sent) == 1


def test_counters_from_many_clients_add_up_exactly(url: str) -> None:
    stores = [RedisStore(url) for _ in range(6)]
    try:

        def work(store: RedisStore) -> None:
            for _ in range(50):
                store.merge_stats(
                    PendingStats(
                        deltas={
                            (1, 100): UsageDelta(
                                calls=1, hits=3, tokens_saved=7, provider_seconds=0.5
                            )
                        }
                    )
                )

        threads = [threading.Thread(target=work, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ((ns, day, delta),) = stores[0].stats_rows()
        assert (ns, day, delta.calls, delta.hits, delta.tokens_saved) == (1, 100, 300, 900, 2100)
        assert delta.provider_seconds == 150.0
    finally:
        for s in stores:
            s.close()


def test_an_entry_written_twice_keeps_the_first_vector(url: str) -> None:
    store = open_store(url)
    ns = store.namespace(Cached(FakeEF(), url)._engine.state("document").ns.spec)

    def batch(value: float) -> EntryBatch:
        return EntryBatch(
            ids=[5], checks=[9], vectors=np.full((1, 4), value, np.float32), tokens=[2], flags=[0]
        )

    store.write_entries(ns.id, batch(1.0))
    store.write_entries(ns.id, batch(2.0))
    (row,) = store.lookup(ns.id, [5])
    assert np.frombuffer(row[6], np.float32).tolist() == [1.0] * 4


def test_deleted_or_foreign_values_are_misses_never_wrong_vectors(
    url: str, raw: redis.Redis
) -> None:
    texts = [f"text {i}" for i in range(20)]
    Cached(FakeEF(), url).embed(texts)
    prefix = prefix_of(url)
    keys = sorted(raw.scan_iter(match=f"{prefix}:e:*"))
    raw.delete(*keys[:5])  # as an eviction or an expiry would
    raw.set(keys[5], b"short")  # something else wrote under our prefix
    again = FakeEF()
    assert np.array_equal(Cached(again, url).embed(texts), expected(texts))
    assert len(again.texts_embedded) == 6


def test_a_hit_on_a_later_day_restarts_the_ttl_and_never_creates_keys(
    url: str, raw: redis.Redis
) -> None:
    ttl_url = url + "&ttl=30d"
    store = open_store(ttl_url)
    assert isinstance(store, RedisStore) and store.ttl_ms == 30 * 86_400_000
    ef = Cached(FakeEF(), store)
    ef(["kept"])
    ns = ef._engine.state("document").ns
    (key,) = raw.scan_iter(match=f"{prefix_of(url)}:e:*")
    assert 0 < raw.pttl(key) <= store.ttl_ms
    # The entry was last used three days ago and will expire in a second.
    (item,) = [e.id for b in store.iter_entries(ns.id) for e in b]
    raw.setrange(key, 18, (today() - 3).to_bytes(4, "little", signed=True))
    raw.pexpire(key, 1000)
    ef(["kept"])
    store.merge_stats(PendingStats(touches={(ns.id, today()): [item, 424242]}))
    assert raw.pttl(key) > 1000
    assert [e.used for b in store.iter_entries(ns.id) for e in b] == [today()]
    assert not raw.exists(store._entry_key(ns.id, 424242))


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30d", 2_592_000_000),
        ("12h", 43_200_000),
        ("90m", 5_400_000),
        ("3600", 3_600_000),
        ("2w", 1_209_600_000),
    ],
)
def test_ttls_parse_with_units(text: str, ms: int) -> None:
    assert parse_ttl(text) == ms


@pytest.mark.parametrize("option", ["ttl=forever", "ttl=0", "prefix=a*b", "prefix=" + "x" * 101])
def test_a_bad_option_is_one_clear_error_and_nothing_is_written(
    option: str, raw: redis.Redis
) -> None:
    prefix = unique_name("test")
    bad = f"{REDIS}?prefix={prefix}&{option}" if option.startswith("ttl") else f"{REDIS}?{option}"
    result = CliRunner().invoke(main, ["stats", "--cache", bad])
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert ("ttl=" in result.output) or ("prefix" in result.output)
    assert list(raw.scan_iter(match=f"{prefix}:*")) == []


def test_the_password_never_leaves_memory(tmp_path: Path) -> None:
    secret = "s3cret-pw-123"
    with own_redis(str(tmp_path), "--requirepass", secret) as server:
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0?prefix=app"
        ef = Cached(FakeEF(), url)
        ef(["a", "b"])
        store = ef.store
        assert secret not in store.url and "***" in store.url
        assert secret not in repr(store) and secret not in public_url(store.url)
        out = CliRunner().invoke(main, ["stats", "--cache", url])
        assert out.exit_code == 0 and secret not in out.output
        export_cache(store, tmp_path / "dump.jsonl.gz")
        assert secret not in gzip.decompress((tmp_path / "dump.jsonl.gz").read_bytes()).decode()
        wrong = url.replace(secret, "not-" + secret)
        with pytest.raises(StoreError) as refused:
            RedisStore(wrong)
        assert secret not in str(refused.value) and "***" in str(refused.value)


def test_an_unreachable_server_is_a_clear_store_error(tmp_path: Path) -> None:
    server = OwnRedis(str(tmp_path))  # a free port, nothing listening
    with pytest.raises(StoreError, match=rf"cache redis://127.0.0.1:{server.port}/0: .*"):
        RedisStore(server.url)


def test_redis_cluster_is_refused_with_the_remedy(tmp_path: Path) -> None:
    with (
        own_redis(
            str(tmp_path),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / "nodes.conf"),
        ) as server,
        pytest.raises(ConfigurationError, match=r"Redis Cluster is not supported.*standalone"),
    ):
        RedisStore(server.url)


def test_a_restart_without_persistence_loses_entries_and_stats_but_never_serves_wrong_vectors(
    tmp_path: Path,
) -> None:
    texts = [f"text {i}" for i in range(30)]
    with own_redis(str(tmp_path)) as server:
        ef = FakeEF()
        cached = Cached(ef, server.url)
        cached.embed(texts)
        before = cached._engine.state("document").ns.id
        server.restart()  # no RDB, no AOF: Redis comes back empty
        assert np.array_equal(cached.embed(texts), expected(texts))
        assert len(ef.texts_embedded) == 60  # every entry was lost and paid for again
        store = cached.store
        # The surviving process registered its namespace again; a new one gets a new id.
        assert [ns.id for ns in store.namespaces()] == [before]
        newcomer = Cached(FakeEF(model="other"), RedisStore(server.url))
        newcomer(["x"])
        assert newcomer._engine.state("document").ns.id > before
        newcomer.store.close()
        store.flush()
        ((_ns, _day, delta),) = [r for r in store.stats_rows() if r[0] == before]
        assert delta.misses == 30  # counters from before the restart are gone too


def test_under_eviction_every_vector_is_exact_and_evictions_are_misses(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(4000)]
    with own_redis(
        str(tmp_path), "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"
    ) as server:
        fake = FakeEF(dim=256)
        cached = Cached(fake, server.url)
        for start in range(0, len(texts), 500):
            cached.embed(texts[start : start + 500])
        want = np.stack([fake_vector(t, 256, "fake-1") for t in texts])
        assert np.array_equal(cached.embed(texts), want)
        assert len(fake.texts_embedded) > len(texts)  # some entries were evicted and re-embedded


def test_a_full_server_without_eviction_refuses_the_whole_write(tmp_path: Path) -> None:
    with own_redis(
        str(tmp_path), "--maxmemory", "1mb", "--maxmemory-policy", "noeviction"
    ) as server:
        strict = Cached(FakeEF(dim=1024), server.url, on_store_error="raise")
        with pytest.raises(StoreError, match=r"is full.*maxmemory"):
            for k in range(50):
                strict.embed([f"batch {k} text {i}" for i in range(100)])
        client = redis.Redis(port=server.port)
        stored = sum(1 for _ in client.scan_iter(match="cachedembed:e:*"))
        assert stored % 100 == 0  # whole batches or nothing
        # By default the paid-for vectors are still returned, and the failure counted.
        lenient = Cached(FakeEF(dim=1024), server.url)
        texts = [f"late text {i}" for i in range(100)]
        want = np.stack([fake_vector(t, 1024, "fake-1") for t in texts])
        assert np.array_equal(lenient.embed(texts), want)
        assert lenient.stats()["store_errors"] >= 1
        assert sum(1 for _ in client.scan_iter(match="cachedembed:e:*")) == stored
        client.close()


def test_export_and_import_move_a_redis_cache_bit_exactly(url: str, tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(40)]
    Cached(FakeEF(), url, store_text=True).embed(texts)
    dump = tmp_path / "dump.jsonl.gz"
    assert CliRunner().invoke(main, ["export", "--cache", url, str(dump)]).exit_code == 0
    header = json.loads(gzip.decompress(dump.read_bytes()).splitlines()[0])
    assert header["source"] == open_store(url).url
    with redis_prefix() as target:
        assert CliRunner().invoke(main, ["import", "--cache", target, str(dump)]).exit_code == 0
        again = FakeEF()
        assert np.array_equal(Cached(again, target).embed(texts), expected(texts))
        assert again.calls == []


class _Killed(BaseException):
    """The removing process dying between two deletions (not an error anything catches)."""


def test_an_interrupted_namespace_removal_leaves_no_half_present_namespace_and_resumes(
    url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"text {i}" for i in range(40)]
    Cached(FakeEF(model="fake-a"), url).embed(texts)
    Cached(FakeEF(model="fake-b"), url).embed(texts[:5])
    close_all()
    store = open_store(url)
    (gone,) = [ns for ns in store.namespaces() if ns.spec.model == "fake-a"]
    entries = f"{prefix_of(url)}:e:{gone.id}:*"

    def dies_after_one_deletion(self: RedisStore, ns_id: int) -> int:
        raw.delete(next(raw.scan_iter(match=f"{self.prefix}:e:{ns_id}:*")))
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(RedisStore, "_delete_entries_of", dies_after_one_deletion)
        with pytest.raises(_Killed):
            store.remove_namespace(gone.id, with_stats=True)
    close_all()
    assert len(list(raw.scan_iter(match=entries))) == 39  # the crash left entries behind

    # ...yet the namespace is wholly gone: not listed, not counted, its stats removed with it,
    # and its model starts afresh (a new id: its leftovers are never served).
    store = open_store(url)
    assert [(m.model, m.entries) for m in list_models(store)] == [("fake-b", 5)]
    assert {ns for ns, _day, _delta in store.stats_rows()} == {ns.id for ns in store.namespaces()}
    again = FakeEF(model="fake-a")
    assert np.array_equal(Cached(again, url).embed(texts[:3]), expected(texts[:3], "fake-a"))
    assert again.texts_embedded == texts[:3]

    # The next removal finishes the interrupted one.
    result = CliRunner().invoke(
        main, ["prune", "--cache", url, "--model", "fake-b", "--remove-namespaces", "--with-stats"]
    )
    assert result.exit_code == 0, result.output
    assert list(raw.scan_iter(match=entries)) == []
    assert raw.exists(f"{prefix_of(url)}:removing") == 0
    close_all()
    assert [(m.model, m.entries) for m in list_models(open_store(url))] == [("fake-a", 3)]
