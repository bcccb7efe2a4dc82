"""Gemini's batch mode through the cache: the real google-genai SDK against a loopback server.

The guarantees shared with OpenAI's Batch API (collect once, dedupe against cache and
pending jobs, cancel) run against both providers' fakes; Gemini's own differences are
tested here too: one text per request, the task type per role, and tokens that are the
synchronous path's estimates (Gemini reports none), flagged as estimated and billed at
the batch price.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.batchapi import JobLimits
from cachedembed.batchjobs import collect_all
from cachedembed.embedding_functions import (
    GoogleGeminiEmbeddingFunction,
    OpenAIEmbeddingFunction,
    openai_batch,
)
from cachedembed.stats import report
from cachedembed.stores import open_store
from cachedembed.usage import estimate_tokens
from tests.batch.fake_batches import FakeBatchAPI
from tests.batch.fake_gemini_batches import FakeGeminiBatchAPI
from tests.batch.test_openai_batch import MODEL, TEXTS
from tests.providers.loopback import LoopbackServer
from tests.providers.scenarios import FAST


def no_sleep(_s: float) -> None:
    pass


@dataclass
class Backend:
    fake: Any
    url: str
    make: Callable[..., Cached]
    inputs: Callable[[], list[list[str]]]
    """The texts of each uploaded request line, in upload order."""


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    fake = FakeGeminiBatchAPI()
    with LoopbackServer(fake) as server:
        monkeypatch.setenv("GEMINI_API_KEY", fake.key)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)

        def make(url: str, **options: Any) -> Cached:
            ef = GoogleGeminiEmbeddingFunction(api_base=server.url, retry=FAST)
            return Cached(ef, url, **options)

        yield Backend(
            fake,
            server.url,
            make,
            lambda: [
                [line["request"]["content"]["parts"][0]["text"]] for line in fake.uploaded_lines()
            ],
        )


@pytest.fixture
def openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    fake = FakeBatchAPI()
    with LoopbackServer(fake) as server:
        monkeypatch.setenv("OPENAI_API_KEY", fake.key)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        # Two inputs per request, so a handful of texts makes several requests (as Gemini's).
        monkeypatch.setattr(
            openai_batch.OpenAIBatchAdapter, "limits", JobLimits(2, None, 50_000, 10**8, 50_000)
        )

        def make(url: str, **options: Any) -> Cached:
            return Cached(OpenAIEmbeddingFunction(model_name=MODEL, retry=FAST), url, **options)

        yield Backend(
            fake,
            server.url + "/v1",
            make,
            lambda: [line["body"]["input"] for line in fake.uploaded_lines()],
        )


@pytest.fixture(params=["openai", "gemini"])
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.getfixturevalue(request.param)
    return value


def estimate(texts: list[str]) -> int:
    return int(estimate_tokens(texts).sum())


# -- Gemini's own ---------------------------------------------------------------------


def test_collected_vectors_are_the_providers_bits_with_estimated_tokens_at_the_batch_price(
    gemini: Backend, cache_url: str
) -> None:
    ef = gemini.make(cache_url)
    done = ef.submit_batch(TEXTS + TEXTS[:2])  # duplicates go once
    assert done.submitted == len(TEXTS) and len(done.jobs) == 1
    assert gemini.inputs() == [[t] for t in TEXTS]  # one text per request line
    assert done.jobs[0].wait(poll=0, sleep=no_sleep).state == "completed"
    result = done.jobs[0].collect()
    assert (result.items, result.failed, result.tokens) == (len(TEXTS), [], estimate(TEXTS))

    vectors = ef(TEXTS)  # all hits now: nothing synchronous
    assert gemini.fake.embeddings_calls == 0
    assert np.array_equal(np.stack(vectors), gemini.fake.expected(TEXTS))
    ef.flush()
    total = report(ef.store)["total"]
    assert total["tokens_embedded"] == total["tokens_batch"] == estimate(TEXTS)
    assert total["tokens_embedded_estimated"] == estimate(TEXTS)
    assert total["tokens_saved_estimated"] == total["tokens_saved"] == estimate(TEXTS)
    assert total["dollars_spent"] == pytest.approx(estimate(TEXTS) * 0.075 / 1e6)
    assert total["dollars_spent_batch"] == total["dollars_spent"]


def test_query_jobs_send_and_store_the_query_task(gemini: Backend, sqlite_url: str) -> None:
    ef = gemini.make(sqlite_url)
    handle = ef.submit_batch(TEXTS[:2], "query").jobs[0]
    assert {line["request"]["task_type"] for line in gemini.fake.uploaded_lines()} == {
        "RETRIEVAL_QUERY"
    }
    handle.wait(poll=0, sleep=no_sleep)
    assert [r.items for r in collect_all(ef.store)] == [2]
    vectors = ef.embed_query(TEXTS[:2])
    assert np.array_equal(np.stack(vectors), gemini.fake.expected(TEXTS[:2], "RETRIEVAL_QUERY"))
    assert gemini.fake.embeddings_calls == 0


def test_a_failed_request_in_the_job_is_reported_and_stays_a_miss(
    gemini: Backend, sqlite_url: str
) -> None:
    gemini.fake.fail = {"r2": "input too long"}
    ef = gemini.make(sqlite_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    handle.wait(poll=0, sleep=no_sleep)
    result = handle.collect()
    assert result.failed == ["r2: 400: input too long"]
    assert result.items == len(TEXTS) - 1
    again = ef.submit_batch(TEXTS)
    assert (again.hits, again.submitted) == (len(TEXTS) - 1, 1)
    assert gemini.inputs()[-1] == [TEXTS[2]]


def test_an_expired_job_keeps_the_results_it_has(gemini: Backend, sqlite_url: str) -> None:
    gemini.fake.expire, gemini.fake.partial = True, 3
    ef = gemini.make(sqlite_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    assert handle.wait(poll=0, sleep=no_sleep).state == "expired"
    result = handle.collect()
    assert result.items == 3 and result.tokens == estimate(TEXTS[:3])
    assert len(result.failed) == len(TEXTS) - 3
    assert all("no result (job expired)" in f for f in result.failed)
    assert handle.job().collected["provider_state"] == "expired"


def test_vertex_ai_has_no_batch_mode() -> None:
    from cachedembed.errors import ConfigurationError

    ef = GoogleGeminiEmbeddingFunction(vertexai=True, project="p", location="us-central1")
    with pytest.raises(ConfigurationError, match="not Vertex AI"):
        ef.batch_adapter()


# -- the same guarantees for every provider ---------------------------------------------


def test_collecting_twice_stores_and_counts_each_result_once(
    backend: Backend, disk_url: str
) -> None:
    ef = backend.make(disk_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    handle.wait(poll=0, sleep=no_sleep)
    first, second = handle.collect(), handle.collect()
    assert (first.items, first.already) == (len(TEXTS), False)
    assert (second.items, second.already) == (0, True)
    assert collect_all(open_store(disk_url, shared=False)) == []  # another machine: nothing
    total = report(ef.store)["total"]
    assert total["misses"] == len(TEXTS) and total["tokens_batch"] == first.tokens


def test_only_texts_neither_cached_nor_pending_are_submitted(
    backend: Backend, sqlite_url: str
) -> None:
    backend.fake.hold = True
    ef = backend.make(sqlite_url)
    first = ef.submit_batch(TEXTS[:3])
    second = ef.submit_batch(TEXTS[:5])
    assert (second.pending, second.submitted) == (3, 2)
    assert [t for request in backend.inputs() for t in request] == TEXTS[:5]
    backend.fake.hold = False
    for handle in (*first.jobs, *second.jobs):
        handle.wait(poll=0, sleep=no_sleep)
        handle.collect()
    third = ef.submit_batch(TEXTS)
    assert (third.hits, third.pending, third.submitted) == (5, 0, 2)


def test_a_cancelled_job_keeps_what_it_finished_and_the_rest_are_misses(
    backend: Backend, sqlite_url: str
) -> None:
    backend.fake.hold, backend.fake.partial = True, 2
    ef = backend.make(sqlite_url)
    handle = ef.submit_batch(TEXTS).jobs[0]
    assert handle.status().state == "in_progress"
    handle.cancel()
    assert handle.wait(poll=0, sleep=no_sleep).state == "cancelled"
    finished = sum(len(request) for request in backend.inputs()[:2])  # the first 2 requests
    assert finished < len(TEXTS) and handle.collect().items == finished
    assert ef.submit_batch(TEXTS).submitted == len(TEXTS) - finished


def test_the_command_line_embeds_a_file_through_gemini_batch_mode(
    gemini: Backend, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.batch.test_batch_cli import run

    gemini.fake.instant = True
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.url)  # the SDK's own setting
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    args = ["embed", str(corpus), "-m", "gemini:gemini-embedding-001", "--cache", sqlite_url]
    output = run(*args, "--batch-api", "--poll-interval", "0", "--out", str(out))
    assert "7 submitted in 1 batch job" in output and "collected 7 vectors" in output
    assert np.array_equal(np.load(out), gemini.fake.expected(TEXTS))
    assert gemini.fake.embeddings_calls == 0
