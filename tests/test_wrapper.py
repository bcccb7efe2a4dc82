"""Cached: only misses reach the provider, results are exact and in order, stats add up."""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import (
    Cached,
    ConfigurationError,
    InvalidInputError,
    ProviderError,
    ProviderResponseError,
    cached,
)
from cachedembed.embedding_functions import EmbeddedBatch, ProviderEmbeddingFunction
from cachedembed.embedding_functions._base import as_matrix
from cachedembed.keys import Role
from cachedembed.stores import close_all, open_store
from tests.conftest import FakeEF, fake_vector


class TokenProvider(ProviderEmbeddingFunction):
    """An in-process provider that batches, reports tokens per batch, and can fail on demand."""

    provider = "test-tokens"

    def __init__(
        self,
        model_name: str = "tok-1",
        batch_size: int = 3,
        fail_on_batch: int | None = None,
        dim: int = 4,
        delay: float = 0.0,
    ) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self.fail_on_batch = fail_on_batch
        self.dim = dim
        self.delay = delay
        self.requests: list[list[str]] = []
        self.reported_tokens = 0
        self._lock = threading.Lock()

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        for n, start in enumerate(range(0, len(texts), self.batch_size)):
            chunk = list(texts[start : start + self.batch_size])
            if n == self.fail_on_batch:
                raise ProviderError(self.provider, "boom", status=500)
            time.sleep(self.delay)
            with self._lock:
                self.requests.append(chunk)
            tokens = 10 * len(chunk) + 1  # deliberately not divisible: apportioning must stay exact
            self.reported_tokens += tokens
            rows = [fake_vector(t, self.dim, role) for t in chunk]
            yield EmbeddedBatch(start, as_matrix(self.provider, rows, len(chunk)), tokens)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model_name, "dim": self.dim}

    def get_config(self) -> dict[str, Any]:
        return {"model_name": self.model_name}


def test_only_misses_reach_the_provider_and_results_keep_input_order(
    cache_url: str, fake_ef: FakeEF
) -> None:
    ef = Cached(fake_ef, cache_url)
    first = ef(["a", "b", "c"])
    second = ef(["c", "d", "a", "b"])
    assert fake_ef.calls == [["a", "b", "c"], ["d"]]
    assert [v.dtype for v in second] == [np.float32] * 4
    for text, vec in zip(["c", "d", "a", "b"], second):
        assert vec.tobytes() == fake_vector(text, 8, "fake-1").tobytes()
    assert first[0].tobytes() == second[2].tobytes()


def test_duplicates_in_one_call_are_embedded_once_and_counted_as_hits(
    cache_url: str, fake_ef: FakeEF
) -> None:
    ef = Cached(fake_ef, cache_url)
    out = ef(["x", "y", "x", "x"])
    assert fake_ef.texts_embedded == ["x", "y"] or sorted(fake_ef.texts_embedded) == ["x", "y"]
    assert len(out) == 4 and out[0].tobytes() == out[2].tobytes() == out[3].tobytes()
    s = ef.stats()
    assert (s["texts"], s["hits"], s["misses"], s["calls"]) == (4, 2, 2, 1)


@pytest.mark.parametrize("backend", ["sqlite", "diskcache"])
def test_hits_survive_reopening_the_cache(backend: str, tmp_path: Path, fake_ef: FakeEF) -> None:
    cache_url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if backend == "sqlite"
        else f"diskcache://{tmp_path / 'dc'}"
    )
    Cached(fake_ef, cache_url)(["persist me"])
    close_all()
    again = FakeEF()
    out = Cached(again, cache_url)(["persist me"])
    assert again.calls == []
    assert out[0].tobytes() == fake_vector("persist me", 8, "fake-1").tobytes()


def test_documents_and_queries_never_share_entries(cache_url: str, fake_ef: FakeEF) -> None:
    ef = Cached(fake_ef, cache_url)
    doc = ef(["same text"])[0]
    query = ef.embed_query(["same text"])[0]
    assert len(fake_ef.calls) == 2
    assert doc.tobytes() != query.tobytes()
    assert ef.embed_query(["same text"])[0].tobytes() == query.tobytes()
    assert len(fake_ef.calls) == 2
    by_role = ef.stats()["by_role"]
    assert by_role["document"]["misses"] == 1 and by_role["query"]["hits"] == 1


def test_two_models_never_share_entries(sqlite_url: str) -> None:
    small, large = FakeEF(model="small"), FakeEF(model="large")
    a = Cached(small, sqlite_url)(["t"])[0]
    b = Cached(large, sqlite_url)(["t"])[0]
    assert small.calls == [["t"]] and large.calls == [["t"]]
    assert a.tobytes() != b.tobytes()


def test_provider_tokens_are_recorded_per_entry_and_saved_exactly(cache_url: str) -> None:
    provider = TokenProvider(batch_size=3)
    ef = Cached(provider, cache_url)
    texts = [f"text number {i}" for i in range(7)]
    ef(texts)
    ef(texts + texts[:2])
    s = ef.stats()
    assert (
        s["tokens_embedded"] == provider.reported_tokens == 10 * 7 + 3
    )  # three batches of 3, 3, 1
    assert s["tokens_embedded_estimated"] == 0
    assert (
        s["tokens_saved"] == provider.reported_tokens + s["tokens_saved"] - provider.reported_tokens
    )
    # The second call served all 7 texts plus 2 repeats from the cache.
    per_entry_total = provider.reported_tokens
    repeats = s["tokens_saved"] - per_entry_total
    assert 0 < repeats < per_entry_total
    assert s["provider_calls"] == 3 and s["misses"] == 7 and s["hits"] == 9


def test_foreign_functions_record_estimated_tokens(cache_url: str, fake_ef: FakeEF) -> None:
    ef = Cached(fake_ef, cache_url)
    ef(["abcdefgh", "abcdefgh", "xyz"])  # 8 bytes -> 2 tokens, 3 bytes -> 1 token
    s = ef.stats()
    assert (s["tokens_embedded"], s["tokens_embedded_estimated"]) == (3, 3)
    assert (s["tokens_saved"], s["tokens_saved_estimated"]) == (2, 2)


def test_a_failing_later_batch_keeps_the_batches_that_succeeded(cache_url: str) -> None:
    failing = TokenProvider(batch_size=2, fail_on_batch=2)
    ef = Cached(failing, cache_url)
    texts = ["a", "b", "c", "d", "e"]
    with pytest.raises(ProviderError, match="test-tokens returned HTTP 500: boom"):
        ef(texts)
    healthy = TokenProvider(batch_size=2)
    out = Cached(healthy, cache_url)(texts)
    assert healthy.requests == [["e"]]
    assert len(out) == 5
    s = Cached(healthy, cache_url).stats()
    assert (
        s["misses"] == 5
        and s["tokens_embedded"] == failing.reported_tokens + healthy.reported_tokens
    )


def test_malformed_provider_output_raises_and_caches_nothing(cache_url: str) -> None:
    class WrongCount(FakeEF):
        def __call__(self, input: list[str]) -> list[np.ndarray]:
            return super().__call__(input)[:-1]

    class NotFinite(FakeEF):
        def __call__(self, input: list[str]) -> list[np.ndarray]:
            out = super().__call__(input)
            out[0][0] = np.nan
            return out

    for bad, message in [
        (WrongCount(), "expected 2 vectors, got 1"),
        (NotFinite(), "NaN or infinite"),
    ]:
        texts = [f"p {message}", f"q {message}"]
        with pytest.raises(ProviderResponseError, match=message):
            Cached(bad, cache_url)(texts)
        good = FakeEF()
        Cached(good, cache_url)(texts)
        assert good.calls == [texts]


@pytest.mark.parametrize(
    ("bad_input", "message"),
    [
        (None, "input is None"),
        ([], "empty list"),
        (["fine", 3], r"input\[1\] is int"),
        ([b"raw"], r"input\[0\] is bytes"),
        (["\udcff"], r"input\[0\] is not valid Unicode"),
    ],
)
def test_bad_input_raises_before_any_provider_call(
    sqlite_url: str, bad_input: Any, message: str
) -> None:
    fake = FakeEF()
    ef = Cached(fake, sqlite_url)
    with pytest.raises(InvalidInputError, match=message):
        ef(bad_input)
    assert fake.calls == []
    assert ef.stats()["calls"] == 0


def test_a_single_string_is_one_text(sqlite_url: str, fake_ef: FakeEF) -> None:
    out = Cached(fake_ef, sqlite_url)("one text")
    assert len(out) == 1 and fake_ef.calls == [["one text"]]


def test_concurrent_threads_asking_for_the_same_texts_make_one_provider_call(
    cache_url: str,
) -> None:
    slow = TokenProvider(batch_size=100, delay=0.2)
    ef = Cached(slow, cache_url)
    texts = [f"shared {i}" for i in range(20)]
    results: list[list[np.ndarray]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ef(texts))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    embedded = [t for r in slow.requests for t in r]
    assert sorted(embedded) == sorted(texts)
    for r in results:
        assert [v.tobytes() for v in r] == [v.tobytes() for v in results[0]]
    s = ef.stats()
    assert s["misses"] == 20 and s["hits"] == 7 * 20


def test_a_stored_entry_with_the_wrong_dimension_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    fake = FakeEF()
    ef = Cached(fake, url)
    ef(["victim", "bystander"])
    close_all()
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute(
            "UPDATE entries SET vec = substr(vec, 1, 12) WHERE id = (SELECT MIN(id) FROM entries)"
        )
    fresh = FakeEF()
    out = Cached(fresh, url)(["victim", "bystander"])
    assert len(fresh.calls) == 1 and len(fresh.calls[0]) == 1
    for text, vec in zip(["victim", "bystander"], out):
        assert vec.tobytes() == fake_vector(text, 8, "fake-1").tobytes()
    close_all()
    again = FakeEF()
    Cached(again, url)(["victim", "bystander"])
    assert again.calls == []


def test_an_id_collision_is_detected_and_never_served(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Cached(FakeEF(), url)(["genuine"])
    close_all()
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("UPDATE entries SET chk = chk + 1")  # same id, different check: another text
    fresh = FakeEF()
    out = Cached(fresh, url)(["genuine"])
    assert fresh.calls == [["genuine"]]
    assert out[0].tobytes() == fake_vector("genuine", 8, "fake-1").tobytes()


def test_float16_storage_halves_the_vector_and_serves_consistent_values(cache_url: str) -> None:
    fake = FakeEF(dim=64)
    ef = Cached(fake, cache_url, dtype="float16")
    first = np.stack(ef(["half"]))
    again = np.stack(ef(["half"]))
    exact = fake_vector("half", 64, "fake-1")
    assert first.dtype == np.float32 and first.tobytes() == again.tobytes()
    assert np.max(np.abs(first[0] - exact)) <= np.max(np.abs(exact)) * 2**-11
    store = open_store(cache_url)
    (ns,) = [n for n in store.namespaces() if n.spec.dtype == "float16"]
    usage = store.namespace_usage()[ns.id]
    assert usage.bytes == 64 * 2


def test_store_text_keeps_texts_only_when_asked(cache_url: str) -> None:
    Cached(FakeEF(), cache_url)(["private"])
    Cached(FakeEF(model="other"), cache_url, store_text=True)(["kept"])
    store = open_store(cache_url)
    texts = {
        e.text for ns in store.namespaces() for batch in store.iter_entries(ns.id) for e in batch
    }
    assert texts == {None, "kept"}


def test_decorator_caches_a_plain_function(sqlite_url: str) -> None:
    calls: list[list[str]] = []

    @cached(model="plain-v1", cache=sqlite_url)
    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        return [[float(len(t)), 1.5] for t in texts]

    assert [v.tolist() for v in embed(["ab", "abc"])] == [[2.0, 1.5], [3.0, 1.5]]
    embed(["abc"])
    assert calls == [["ab", "abc"]]
    with pytest.raises(ConfigurationError, match="model="):
        cached(model="")


def test_a_function_without_identity_needs_a_namespace(sqlite_url: str) -> None:
    class Anonymous:
        def __call__(self, input: list[str]) -> list[list[float]]:
            return [[1.0] for _ in input]

    with pytest.raises(ConfigurationError, match="namespace="):
        Cached(Anonymous(), sqlite_url)(["x"])
    assert len(Cached(Anonymous(), sqlite_url, namespace="anon-v1")(["x"])) == 1


def test_a_function_with_a_name_but_no_config_gets_a_warning(sqlite_url: str) -> None:
    class NameOnly(FakeEF):
        def get_config(self) -> dict[str, object]:
            return {}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Cached(NameOnly(), sqlite_url)(["x"])
    assert any("empty get_config()" in str(w.message) for w in caught)


def test_unicode_normalisation_is_opt_in(sqlite_url: str) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    plain = FakeEF()
    Cached(plain, sqlite_url)([nfc, nfd])
    assert plain.calls == [[nfc, nfd]]
    normalised = FakeEF(model="n")
    out = Cached(normalised, sqlite_url, normalize_unicode="NFC")([nfc, nfd])
    assert normalised.calls == [[nfc]] and out[0].tobytes() == out[1].tobytes()


def test_the_default_cache_is_taken_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEDEMBED_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    Cached(FakeEF())(["x"])
    assert (tmp_path / "from-env.db").exists()


def test_sqlite_cache_files_are_private(tmp_path: Path) -> None:
    Cached(FakeEF(), f"sqlite:///{tmp_path / 'sub' / 'c.db'}")(["x"])
    assert (tmp_path / "sub").stat().st_mode & 0o777 == 0o700
    for f in (tmp_path / "sub").iterdir():
        assert f.stat().st_mode & 0o077 == 0, f


async def test_async_calls_share_the_cache(sqlite_url: str, fake_ef: FakeEF) -> None:
    ef = Cached(fake_ef, sqlite_url)
    docs = await ef.acall(["a", "b"])
    queries = await ef.aembed_query(["a"])
    assert len(docs) == 2 and len(queries) == 1
    assert ef(["a"])[0].tobytes() == docs[0].tobytes()
    assert len(fake_ef.calls) == 2


def test_embed_with_usage_reports_each_texts_tokens_and_this_calls_counters(
    sqlite_url: str,
) -> None:
    provider = TokenProvider(batch_size=2)
    ef = Cached(provider, sqlite_url)
    first = ef.embed_with_usage(["a", "bb", "a", "ccc"])
    assert first.vectors.tobytes() == ef.embed(["a", "bb", "a", "ccc"]).tobytes()
    # Per text in input order; the repeated "a" costs what its entry cost.
    assert first.tokens[0] == first.tokens[2]
    assert int(first.tokens.sum()) - int(first.tokens[2]) == provider.reported_tokens == 21 + 11
    assert (first.usage.misses, first.usage.hits, first.usage.provider_calls) == (3, 1, 2)
    assert first.usage.tokens_embedded == provider.reported_tokens
    assert len(first.provider_seconds) == 2
    again = ef.embed_with_usage(["ccc", "bb"])
    assert again.tokens.tolist() == [first.tokens[3], first.tokens[1]]
    assert (again.usage.hits, again.usage.misses, again.provider_seconds) == (2, 0, [])
    assert again.usage.tokens_saved == int(again.tokens.sum())
    assert ef.dimension("document") == 4 and ef.dimension("query") is None


# -- the single-text hit path (search queries) ----------------------------------------


def test_single_text_hits_are_exact_writable_and_counted_like_batch_hits(cache_url: str) -> None:
    provider = TokenProvider(batch_size=1)
    ef = Cached(provider, cache_url)
    texts = ["alpha", "beta"]
    ef(texts)  # two batches of one: 11 tokens each
    one = ef.embed(["beta"])
    assert one.shape == (1, 4) and one.dtype == np.float32 and one.flags.writeable
    assert one[0].tobytes() == fake_vector("beta", 4, "document").tobytes()
    ef.embed_query(["beta"])  # a miss in the query namespace, then a single hit
    ef.embed_query(["beta"])
    s = ef.stats()
    assert s["by_role"]["document"]["hits"] == 1
    assert s["by_role"]["document"]["tokens_saved"] == 11
    assert s["by_role"]["query"]["misses"] == 1 and s["by_role"]["query"]["hits"] == 1
    assert s["calls"] == 4 and len(provider.requests) == 3
    single = ef.embed_with_usage(["alpha"])
    assert single.tokens.tolist() == [11] and single.provider_seconds == []
    assert (single.usage.calls, single.usage.hits, single.usage.tokens_saved) == (1, 1, 11)


def _cached_then_edited(tmp_path: Path, text: str, sql: str) -> str:
    """A SQLite cache holding ``text``, then changed behind the wrapper's back by ``sql``."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Cached(FakeEF(), url)([text])
    close_all()
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute(sql)
    return url


def test_a_damaged_entry_is_a_miss_on_the_single_text_path_too(tmp_path: Path) -> None:
    url = _cached_then_edited(tmp_path, "victim", "UPDATE entries SET vec = substr(vec, 1, 12)")
    fresh = FakeEF()
    out = Cached(fresh, url)(["victim"])
    assert fresh.calls == [["victim"]]
    assert out[0].tobytes() == fake_vector("victim", 8, "fake-1").tobytes()


def test_a_single_hit_touches_an_entry_last_used_on_an_earlier_day(tmp_path: Path) -> None:
    url = _cached_then_edited(tmp_path, "old", "UPDATE entries SET used = used - 30")
    ef = Cached(FakeEF(), url)
    ef(["old"])
    ef.flush()
    with sqlite3.connect(tmp_path / "c.db") as db:
        ((used,),) = db.execute("SELECT used FROM entries").fetchall()
    assert used == int(time.time()) // 86400


def test_warm_batches_are_served_writable_in_input_order(cache_url: str, fake_ef: FakeEF) -> None:
    ef = Cached(fake_ef, cache_url)
    texts = [f"t{i}" for i in range(50)]
    ef(texts)
    for order in (texts, sorted(texts, key=lambda t: hash(t) % 7), texts[::-1] + texts[:3]):
        out = ef.embed(order)
        assert out.flags.writeable
        assert [v.tobytes() for v in out] == [fake_vector(t, 8, "fake-1").tobytes() for t in order]
    assert len(fake_ef.calls) == 1


# -- stats(): the cache's lifetime totals; session_stats(): what this object did -----


def test_session_stats_count_only_this_objects_calls_while_stats_count_the_whole_cache(
    cache_url: str,
) -> None:
    first, second = Cached(TokenProvider(), cache_url), Cached(TokenProvider(), cache_url)
    first.embed(["a", "b"])
    second.embed(["a", "b", "c", "a"])
    second.embed(["q"], "query")

    mine = second.session_stats()
    assert (mine["calls"], mine["hits"], mine["misses"], mine["provider_calls"]) == (2, 3, 2, 2)
    assert (mine["by_role"]["document"]["hits"], mine["by_role"]["query"]["misses"]) == (3, 1)
    assert (first.session_stats()["hits"], first.session_stats()["misses"]) == (0, 2)
    lifetime = second.stats()
    assert (lifetime["calls"], lifetime["hits"], lifetime["misses"]) == (3, 3, 4)
    # A new wrapper on the same cache starts from zero; the cache's totals stay.
    fresh = Cached(TokenProvider(), cache_url)
    assert fresh.session_stats()["texts"] == 0 and fresh.stats()["texts"] == 7


def test_session_stats_have_the_keys_of_stats(sqlite_url: str) -> None:
    ef = Cached(TokenProvider(), sqlite_url)
    ef.embed(["a", "a"])
    session, lifetime = ef.session_stats(), ef.stats()
    assert session.keys() == lifetime.keys()
    assert session["by_role"]["document"].keys() == lifetime["by_role"]["document"].keys()
    assert {k: v for k, v in session.items() if k != "by_role"} == {
        k: v for k, v in lifetime.items() if k != "by_role"
    }


def test_session_stats_include_the_batches_stored_before_a_failure(sqlite_url: str) -> None:
    ef = Cached(TokenProvider(batch_size=2, fail_on_batch=1), sqlite_url)
    with pytest.raises(ProviderError):
        ef.embed(["a", "b", "c", "d"])
    session = ef.session_stats()
    assert (session["misses"], session["provider_calls"]) == (2, 1)
    assert (session["misses"], session["tokens_embedded"]) == (
        ef.stats()["misses"],
        ef.stats()["tokens_embedded"],
    )
