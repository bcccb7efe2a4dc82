"""OpenAI's Batch API through the cache: the real openai SDK against a loopback Files/Batches server.

Jobs are recorded in the cache on every store; only misses go (deduplicated, minus texts
in pending jobs); collecting validates every result and stores each once, with the
tokens the provider reported, billed at the batch price in ``stats``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached, PendingBatchError
from cachedembed.batchapi import JobLimits
from cachedembed.embedding_functions import OpenAIEmbeddingFunction, openai_batch
from cachedembed.stats import report
from cachedembed.stores import open_store
from tests.batch.fake_batches import FakeBatchAPI
from tests.providers.fakes import tokens_of
from tests.providers.loopback import LoopbackServer
from tests.providers.scenarios import FAST

MODEL = "text-embedding-3-small"
TEXTS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBatchAPI, str]]:
    fake = FakeBatchAPI()
    with LoopbackServer(fake) as server:
        monkeypatch.setenv("OPENAI_API_KEY", fake.key)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        yield fake, server.url + "/v1"


@pytest.fixture
def small_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two inputs per request, so a handful of texts makes several requests."""
    monkeypatch.setattr(
        openai_batch.OpenAIBatchAdapter,
        "limits",
        JobLimits(2, None, 50_000, 200 * 1024 * 1024, 50_000),
    )


def wrapper(url: str, **options: object) -> Cached:
    return Cached(OpenAIEmbeddingFunction(model_name=MODEL, retry=FAST), url, **options)


def batch_tokens(texts: list[str]) -> int:
    return sum(tokens_of(t) for t in texts)


def test_submitted_misses_are_collected_bit_identical_with_reported_tokens_at_the_batch_price(
    api: tuple[FakeBatchAPI, str], cache_url: str, small_requests: None
) -> None:
    fake, _ = api
    ef = wrapper(cache_url)
    done = ef.submit_batch(TEXTS + TEXTS[:2])  # duplicates go once
    assert done.submitted == len(TEXTS) and len(done.jobs) == 1
    lines = fake.uploaded_lines()
    assert [len(line["body"]["input"]) for line in lines] == [2, 2, 2, 1]
    job = done.jobs[0].wait(poll=0, sleep=lambda _s: None)
    assert job.state == "completed"
    result = done.jobs[0].collect()
    assert (result.items, result.failed) == (len(TEXTS), [])
    assert result.tokens == batch_tokens(TEXTS)

    vectors = ef(TEXTS)  # all hits now: no synchronous call
    assert fake.embeddings_calls == 0
    assert np.array_equal(np.stack(vectors), fake.expected(TEXTS))
    ef.flush()
    total = report(ef.store)["total"]
    assert total["tokens_embedded"] == total["tokens_batch"] == batch_tokens(TEXTS)
    assert total["dollars_spent"] == pytest.approx(batch_tokens(TEXTS) * 0.01 / 1e6)
    assert total["dollars_spent_batch"] == total["dollars_spent"]
    assert total["dollars_saved_batch"] == pytest.approx(batch_tokens(TEXTS) * 0.01 / 1e6)
    assert (total["misses"], total["hits"]) == (len(TEXTS), len(TEXTS))


def test_collecting_twice_stores_and_counts_each_result_once(
    api: tuple[FakeBatchAPI, str], disk_url: str
) -> None:
    ef = wrapper(disk_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    handle.wait(poll=0, sleep=lambda _s: None)
    first, second = handle.collect(), handle.collect()
    assert (first.items, first.already) == (len(TEXTS), False)
    assert (second.items, second.already) == (0, True)
    # A second machine (another store object on the same cache) finds nothing to do either.
    other = open_store(disk_url, shared=False)
    from cachedembed.batchjobs import collect_all

    assert collect_all(other) == []
    assert report(ef.store)["total"]["tokens_batch"] == batch_tokens(TEXTS)


def test_failed_requests_are_reported_and_their_texts_stay_misses(
    api: tuple[FakeBatchAPI, str], sqlite_url: str, small_requests: None
) -> None:
    fake, _ = api
    fake.fail = {"r2": "input too long"}
    ef = wrapper(sqlite_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    handle.wait(poll=0, sleep=lambda _s: None)
    result = handle.collect()
    assert result.failed == ["r2: HTTP 400: input too long"]
    assert result.items == len(TEXTS) - 2
    job = handle.job()
    assert job.state == "collected" and job.errors == result.failed
    assert job.collected["failed_requests"] == 1
    # The two texts of r2 (gamma, delta) are misses; the rest are cached.
    found = ef.store.lookup(
        ef.namespaces()[0].id, ef._engine.hasher("document").text_key_arrays(TEXTS)[0].tolist()
    )
    assert len(found) == len(TEXTS) - 2
    again = ef.submit_batch(TEXTS)
    assert (again.hits, again.submitted) == (len(TEXTS) - 2, 2)


def test_an_expired_job_keeps_the_results_it_has(
    api: tuple[FakeBatchAPI, str], sqlite_url: str, small_requests: None
) -> None:
    fake, _ = api
    fake.expire, fake.partial = True, 2
    ef = wrapper(sqlite_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    assert handle.wait(poll=0, sleep=lambda _s: None).state == "expired"
    result = handle.collect()
    assert result.items == 4
    assert len(result.failed) == 2 and all(
        "batch_expired" in f or "window expired" in f for f in result.failed
    )
    assert report(ef.store)["total"]["tokens_batch"] == batch_tokens(TEXTS[:4])


def test_only_texts_neither_cached_nor_pending_are_submitted(
    api: tuple[FakeBatchAPI, str], sqlite_url: str
) -> None:
    fake, _ = api
    fake.hold = True
    ef = wrapper(sqlite_url)
    ef.store.jobs()  # the store is migrated and empty
    first = ef.submit_batch(TEXTS[:3])
    second = ef.submit_batch(TEXTS[:5])
    assert (second.pending, second.submitted) == (3, 2)
    inputs = [line["body"]["input"] for line in fake.uploaded_lines()]
    assert inputs == [TEXTS[:3], TEXTS[3:5]]
    fake.hold = False
    for handle in (*first.jobs, *second.jobs):
        handle.wait(poll=0, sleep=lambda _s: None)
        handle.collect()
    third = ef.submit_batch(TEXTS)
    assert (third.hits, third.pending, third.submitted) == (5, 0, 2)


def test_a_call_on_texts_of_a_pending_job_says_so_instead_of_paying_twice(
    api: tuple[FakeBatchAPI, str], sqlite_url: str
) -> None:
    fake, _ = api
    ef = wrapper(sqlite_url)
    handle = ef.submit_batch(TEXTS[:2]).jobs[0]
    with pytest.raises(PendingBatchError, match=f"in batch job {handle.id}, not yet collected"):
        ef(TEXTS[:3])
    assert fake.embeddings_calls == 0
    assert handle.job().state == "validating"  # nothing was stored or paid for

    waiting = wrapper(sqlite_url, pending_batches="wait")
    waiting.batch_poll = 0
    vectors = waiting(TEXTS[:2])  # waits for the job, collects it, serves its vectors
    assert handle.job().state == "collected"
    assert np.array_equal(np.stack(vectors), fake.expected(TEXTS[:2]))
    assert fake.embeddings_calls == 0


def test_jobs_split_at_the_inputs_per_batch_limit(
    api: tuple[FakeBatchAPI, str], memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = api
    monkeypatch.setattr(
        openai_batch.OpenAIBatchAdapter, "limits", JobLimits(2, None, 50_000, 10**8, 3)
    )
    done = wrapper(memory_url).submit_batch(TEXTS)
    # Requests of at most 2 inputs, jobs of at most 3 inputs: 2 | 2 | 2+1.
    assert [j.job().item_count for j in done.jobs] == [2, 2, 3]
    assert [len(j.job().requests) for j in done.jobs] == [1, 1, 2]
    assert len(fake.jobs) == 3


@pytest.fixture
def memory_url(tmp_path: Path) -> str:
    return f"memory://{tmp_path.name}"


def test_waiting_polls_with_a_doubling_backoff(
    api: tuple[FakeBatchAPI, str], memory_url: str
) -> None:
    handle = wrapper(memory_url).submit_batch(TEXTS).jobs[0]
    slept: list[float] = []
    states: list[str] = []
    job = handle.wait(
        poll=1, max_poll=3, sleep=slept.append, on_poll=lambda j: states.append(j.state)
    )
    assert states == ["in_progress", "finalizing", "completed"]
    assert slept == [1, 2] and job.state == "completed"


def test_a_refused_upload_leaves_no_pending_job_and_its_texts_misses(
    api: tuple[FakeBatchAPI, str], sqlite_url: str
) -> None:
    fake, _ = api
    ef = wrapper(sqlite_url)
    fake.reject_upload = True
    with pytest.raises(Exception, match="file rejected"):
        ef.submit_batch(TEXTS)
    (job,) = ef.store.jobs()
    assert job.state == "collected" and "file rejected" in job.errors[0]
    assert ef.store.jobs(pending=True) == []
    fake.reject_upload = False
    assert ef.submit_batch(TEXTS).submitted == len(TEXTS)  # not held back as pending


@pytest.fixture(params=["sqlite", "postgresql", "mariadb", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    from cachedembed.stores import close_all
    from tests.stores.servers import server_database

    with server_database(request.param) as url:
        yield url
        close_all()


def test_two_machines_collecting_at_once_store_each_result_once(
    api: tuple[FakeBatchAPI, str], shared_url: str
) -> None:
    import threading

    from cachedembed.batchjobs import JobHandle

    ef = wrapper(shared_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    handle.wait(poll=0, sleep=lambda _s: None)
    start = threading.Barrier(2)
    results = []

    def collect_from_another_machine() -> None:
        other = JobHandle(open_store(shared_url, shared=False), handle.id)
        start.wait()
        results.append(other.collect())

    threads = [threading.Thread(target=collect_from_another_machine) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.items for r in results) == [0, len(TEXTS)]
    assert sorted(r.already for r in results) == [False, True]
    fresh = open_store(shared_url, shared=False)
    assert report(fresh)["total"]["tokens_batch"] == batch_tokens(TEXTS)
    assert report(fresh)["total"]["misses"] == len(TEXTS)
