"""Collecting a large batch job runs in bounded memory and stores exactly what the provider sent.

The result files are streamed to temporary files and read line by line; vectors are written
in chunks. A 20,000 x 1,536 job (a ~160 MB output file, ~120 MB of vectors) is collected
with a peak of Python allocations far below what holding the file or the vectors would take.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx2
import numpy as np
import pytest

from cachedembed import Cached, batchjobs
from cachedembed.batchapi import JobLimits
from cachedembed.embedding_functions import OpenAIEmbeddingFunction, openai_batch
from cachedembed.stats import report
from cachedembed.stores.base import EntryBatch
from cachedembed.usage import UsageDelta
from tests.batch.fake_batches import FakeBatchAPI
from tests.providers.fakes import tokens_of
from tests.providers.loopback import LoopbackServer
from tests.providers.scenarios import FAST

MODEL = "text-embedding-3-small"
N, DIM = 20_000, 1536
PEAK_BOUND = 150 * 1024 * 1024


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBatchAPI]:
    fake = FakeBatchAPI()
    fake.dim = DIM
    with LoopbackServer(fake) as server:
        monkeypatch.setenv("OPENAI_API_KEY", fake.key)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        yield fake


def texts(n: int) -> list[str]:
    return [f"document number {i} of the large job" for i in range(n)]


@pytest.mark.slow
def test_a_large_job_is_collected_in_bounded_memory_with_every_vector_and_token(
    api: FakeBatchAPI, tmp_path: Path
) -> None:
    docs = texts(N)
    ef = Cached(OpenAIEmbeddingFunction(model_name=MODEL, retry=FAST), f"sqlite:///{tmp_path}/c.db")
    handle = ef.submit_batch(docs).jobs[0]
    assert handle.wait(poll=0, sleep=lambda _s: None).state == "completed"

    tracemalloc.start()
    try:
        result = handle.collect()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.items, result.failed) == (N, [])
    assert peak < PEAK_BOUND, f"collect peaked at {peak / 2**20:.0f} MB"
    sample = [0, 1, 2047, 2048, 9_999, N - 1]
    got = np.stack(ef([docs[i] for i in sample]))
    assert np.array_equal(got, api.expected([docs[i] for i in sample]))
    ef.flush()
    total = report(ef.store)["total"]
    assert total["tokens_batch"] == sum(tokens_of(t) for t in docs)
    assert total["provider_calls"] == -(-N // 2048)  # one per request, however they are chunked


def test_a_download_cut_mid_body_is_retried_from_the_start(
    api: FakeBatchAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = texts(300)
    ef = Cached(OpenAIEmbeddingFunction(model_name=MODEL, retry=FAST), f"sqlite:///{tmp_path}/c.db")
    handle = ef.submit_batch(docs).jobs[0]
    handle.wait(poll=0, sleep=lambda _s: None)

    real = httpx2.Response.iter_bytes
    cuts = []

    def cut_once(self: httpx2.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        stream = real(self, 4096)
        if not cuts:
            cuts.append(1)
            yield next(stream)  # part of the file, then the connection drops
            raise httpx2.ReadError("connection reset mid-body")
        yield from stream

    monkeypatch.setattr(httpx2.Response, "iter_bytes", cut_once)
    result = handle.collect()
    assert cuts == [1]
    assert (result.items, result.failed) == (len(docs), [])
    assert np.array_equal(np.stack(ef(docs)), api.expected(docs))


def test_a_collect_failing_at_a_later_chunk_stores_nothing_and_the_next_one_stores_all(
    api: FakeBatchAPI, cache_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        openai_batch.OpenAIBatchAdapter, "limits", JobLimits(2, None, 50_000, 2**27, 50_000)
    )
    monkeypatch.setattr(batchjobs, "WRITE_CHUNK", 4)  # two requests per write: 4 writes
    docs = texts(15)
    ef = Cached(OpenAIEmbeddingFunction(model_name=MODEL, retry=FAST), cache_url)
    handle = ef.submit_batch(docs).jobs[0]
    handle.wait(poll=0, sleep=lambda _s: None)

    real, writes = ef.store.write, []

    def fail_third(ns_id: int, batch: EntryBatch, delta: UsageDelta) -> None:
        writes.append(len(batch.ids))
        if len(writes) == 3:
            raise OSError("disk full")
        real(ns_id, batch, delta)

    monkeypatch.setattr(ef.store, "write", fail_third)
    with pytest.raises(OSError, match="disk full"):
        handle.collect()
    assert len(writes) == 3 and max(writes) <= 4 and handle.job().pending
    monkeypatch.setattr(ef.store, "write", real)
    ef.flush()
    assert report(ef.store)["total"]["tokens_batch"] == 0

    result = handle.collect()
    assert (result.items, result.failed) == (len(docs), [])
    assert np.array_equal(np.stack(ef(docs)), api.expected(docs))
    ef.flush()
    total = report(ef.store)["total"]
    assert total["tokens_batch"] == sum(tokens_of(t) for t in docs)
    assert total["provider_calls"] == 8  # 15 texts, two per request
