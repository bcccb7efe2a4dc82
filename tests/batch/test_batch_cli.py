"""The batch API from the shell: ``embed --batch-api``, ``batch status|collect|cancel``, and a
submitter killed mid-submission resumed by ``batch collect`` without a second job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cachedembed.cli import main
from cachedembed.stores import open_store
from tests.batch.fake_batches import FakeBatchAPI
from tests.providers.fakes import tokens_of
from tests.providers.loopback import LoopbackServer

TEXTS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
SPEC = "openai:text-embedding-3-small"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBatchAPI]:
    fake = FakeBatchAPI()
    fake.instant = True
    with LoopbackServer(fake) as server:
        monkeypatch.setenv("OPENAI_API_KEY", fake.key)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        yield fake


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return str(path)


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_embed_with_the_batch_api_waits_collects_and_writes_the_vectors(
    api: FakeBatchAPI, corpus: str, sqlite_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "v.npy"
    args = [
        "embed",
        corpus,
        "-m",
        SPEC,
        "--cache",
        sqlite_url,
        "--batch-api",
        "--poll-interval",
        "0",
    ]
    output = run(*args, "--out", str(out))
    assert (
        "7 texts, 7 distinct: 0 cached, 0 already in pending jobs, 7 submitted in 1 batch job"
        in output
    )
    assert "completed, collected 7 vectors" in output
    assert np.array_equal(np.load(out), api.expected(TEXTS))
    assert api.embeddings_calls == 0
    again = run(*args)
    assert (
        "7 texts, 7 distinct: 7 cached, 0 already in pending jobs, 0 submitted in 0 batch jobs"
        in again
    )


def test_no_wait_then_status_collect_and_stats_show_the_batch_price(
    api: FakeBatchAPI, corpus: str, sqlite_url: str
) -> None:
    submitted = run("embed", corpus, "-m", SPEC, "--cache", sqlite_url, "--batch-api", "--no-wait")
    assert "not waiting (--no-wait)" in submitted
    job = open_store(sqlite_url).jobs()[0]
    assert job.state == "validating" and job.item_count == 7
    status = run("batch", "status", "--cache", sqlite_url, "--no-refresh")
    assert job.id in status and "validating" in status
    collected = run("batch", "collect", "--cache", sqlite_url)
    assert f"{job.id}: completed, collected 7 vectors" in collected
    assert "already collected" in run("batch", "collect", "--cache", sqlite_url, job.id)
    stats = run("stats", "--cache", sqlite_url)
    tokens = sum(tokens_of(t) for t in TEXTS)
    header, row = stats.splitlines()[1:3]
    assert "spent via batch" in header and "batch discount" in header
    dollars = f"${tokens * 0.01 / 1e6:.6f}"
    assert row.split().count(dollars) == 3  # spent, spent via batch, batch discount


def test_a_cancelled_job_keeps_what_it_finished(
    api: FakeBatchAPI, corpus: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cachedembed.batchapi import JobLimits
    from cachedembed.embedding_functions import openai_batch

    monkeypatch.setattr(
        openai_batch.OpenAIBatchAdapter, "limits", JobLimits(2, None, 50_000, 10**8, 50_000)
    )
    api.hold, api.partial = True, 2
    run("embed", corpus, "-m", SPEC, "--cache", sqlite_url, "--batch-api", "--no-wait")
    job = open_store(sqlite_url).jobs()[0]
    assert f"{job.id}: cancelling" in run("batch", "cancel", "--cache", sqlite_url, job.id)
    collected = run("batch", "collect", "--cache", sqlite_url)
    assert (
        "cancelled, collected 4 vectors" in collected
        and "2 failed requests left as misses" in collected
    )


def test_batch_api_needs_a_provider_that_has_one(corpus: str, sqlite_url: str) -> None:
    result = CliRunner().invoke(
        main,
        ["embed", corpus, "-m", "ollama:nomic-embed-text", "--cache", sqlite_url, "--batch-api"],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --batch-api: ollama:nomic-embed-text has no batch API support; use openai:MODEL or gemini:MODEL"
    ]


# Slow: kills a real submitter process mid-request.
@pytest.mark.slow
def test_a_submitter_killed_mid_submission_is_resumed_without_a_second_job(
    api: FakeBatchAPI, corpus: str, sqlite_url: str
) -> None:
    api.release_create.clear()  # hold POST /v1/batches until the submitter is dead
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cachedembed",
            "embed",
            corpus,
            "-m",
            SPEC,
            "--cache",
            sqlite_url,
            "--batch-api",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert api.create_seen.wait(timeout=120), "the submitter never created its batch"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    api.release_create.set()
    assert api.created.wait(timeout=30)  # the request had reached the server: the job exists
    job = open_store(sqlite_url).jobs()[0]
    assert job.state == "submitting" and job.input_file_id is not None and job.batch_id is None

    collected = run("batch", "collect", "--cache", sqlite_url)
    assert "completed, collected 7 vectors" in collected
    assert len(api.jobs) == 1  # found by its metadata, not created twice
    assert open_store(sqlite_url).jobs()[0].batch_id == next(iter(api.jobs))
