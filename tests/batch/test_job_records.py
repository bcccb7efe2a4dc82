"""Batch jobs are recorded in the cache itself, on every store, and updated only by compare-and-set.

The same guarantees on SQLite, diskcache, memory, Redis, PostgreSQL and MariaDB: a job
reads back as written (item ids, never texts unless asked), an update based on a stale
read is refused (so two collectors never both store a job), and an update inside a
failed ``bulk()`` is taken back with the entries written there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cachedembed.keys import NamespaceSpec
from cachedembed.stores import close_all, open_store
from cachedembed.stores.base import BatchJob, EntryBatch
from cachedembed.usage import UsageDelta
from tests.stores.servers import server_database


@pytest.fixture(params=["sqlite", "diskcache", "memory", "redis", "postgresql", "mariadb"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param in ("redis", "postgresql", "mariadb"):
        with server_database(request.param) as url:
            yield url
            close_all()
        return
    yield {
        "sqlite": f"sqlite:///{tmp_path / 'c.db'}",
        "diskcache": f"diskcache://{tmp_path / 'dc'}",
        "memory": f"memory://{tmp_path.name}",
    }[request.param]


def new_job(ns: int, job_id: str = "ce-1") -> BatchJob:
    return BatchJob(
        id=job_id,
        provider="openai",
        ns=ns,
        state="submitting",
        created=1_700_000_000,
        requests={"r0": [[11, 5, 3], [-12, 6, 4]], "r2": [[2**62, -7, 1]]},
        config={"model_name": "text-embedding-3-small"},
    )


def test_a_job_reads_back_as_recorded_and_only_unfinished_jobs_are_pending(any_url: str) -> None:
    store = open_store(any_url)
    ns = store.namespace(
        NamespaceSpec(identity={"provider": "custom", "namespace": "j"}, role="document")
    )
    store.record_job(new_job(ns.id))
    (job,) = store.jobs(pending=True, ns_id=ns.id)
    assert job.requests == new_job(ns.id).requests and job.config == new_job(ns.id).config
    assert (job.state, job.rev, job.texts, job.item_count) == ("submitting", 1, None, 3)
    job.state = "collected"
    assert store.update_job(job)
    assert store.jobs(pending=True) == [] and store.job("ce-1").state == "collected"  # type: ignore[union-attr]


def test_an_update_from_a_stale_read_is_refused(any_url: str) -> None:
    store = open_store(any_url)
    store.record_job(new_job(1))
    first, second = store.job("ce-1"), store.job("ce-1")
    assert first is not None and second is not None
    first.state = "in_progress"
    assert store.update_job(first)
    second.state = "collected"
    assert not store.update_job(second)  # it read revision 1; the job is at 2
    assert store.job("ce-1").state == "in_progress"  # type: ignore[union-attr]


def test_a_job_update_inside_a_failed_bulk_is_taken_back_with_its_entries(any_url: str) -> None:
    store = open_store(any_url)
    ns = store.namespace(
        NamespaceSpec(identity={"provider": "custom", "namespace": "j"}, role="document")
    )
    store.set_dimension(ns, 2)
    store.record_job(new_job(ns.id))
    job = store.job("ce-1")
    assert job is not None
    with pytest.raises(RuntimeError), store.bulk():
        job.state = "collected"
        assert store.update_job(job)
        batch = EntryBatch([11], [5], np.ones((1, 2), np.float32), [3], [0])
        store.write(ns.id, batch, UsageDelta(misses=1, tokens_embedded=3, tokens_batch=3))
        raise RuntimeError("crash in the middle of collecting")
    assert store.job("ce-1").state == "submitting"  # type: ignore[union-attr]
    assert store.lookup(ns.id, [11]) == []
    assert sum(d.tokens_batch for _n, _d, d in store.stats_rows()) == 0


def test_a_refused_update_inside_a_failed_bulk_leaves_the_winners_update(any_url: str) -> None:
    # Two collectors: the loser's rollback must not take back what the winner stored.
    store = open_store(any_url)
    store.record_job(new_job(1))
    winner, loser = store.job("ce-1"), store.job("ce-1")
    assert winner is not None and loser is not None
    winner.state = "collected"
    assert store.update_job(winner)
    with pytest.raises(RuntimeError), store.bulk():
        loser.state = "collected"
        assert not store.update_job(loser)
        raise RuntimeError("the loser gives up")
    job = store.job("ce-1")
    assert job is not None and (job.state, job.rev) == ("collected", 2)
