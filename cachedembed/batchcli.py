"""``cachedembed embed --batch-api`` and the ``cachedembed batch`` commands (status, collect, cancel)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from ._cliutil import CACHE_OPTION, JSON_OPTION, _echo_json, _fail, count
from ._printable import printable

if TYPE_CHECKING:
    from .batchjobs import Collected
    from .keys import Role
    from .stores.base import BatchJob
    from .wrapper import Cached


def embed_via_batch(
    cached: Cached, texts: list[str], role: Role, *, wait: bool, poll: float
) -> bool:
    """Submit the misses as batch jobs; with ``wait``, follow and collect them.

    Returns whether every text is now cached (the caller then serves them all as hits).
    """
    done = cached.submit_batch(texts, role)
    click.echo(
        f"{count(done.texts, 'text')}, {done.distinct:,} distinct: {done.hits:,} cached, "
        f"{done.pending:,} already in pending jobs, "
        f"{done.submitted:,} submitted in {count(len(done.jobs), 'batch job')}",
        err=True,
    )
    for handle in done.jobs:
        click.echo(f"submitted {handle.id}", err=True)
    if not wait:
        click.echo("not waiting (--no-wait): collect later with `cachedembed batch collect`")
        return False
    waiting = [*done.jobs, *_pending_handles(cached, done)]
    failed = 0
    for handle in waiting:
        handle.wait(poll=poll, on_poll=_progress)
        result = handle.collect()
        _report(result)
        failed += len(result.failed)
    if failed:
        raise _fail(
            f"{count(failed, 'batch request')} failed (listed above) and their texts stay misses: "
            "run the same command again to resubmit them"
        )
    return True


def _pending_handles(cached: Cached, done: Any) -> list[Any]:
    """Jobs submitted earlier that cover some of these texts (also waited for)."""
    if not done.pending:
        return []
    new = {h.id for h in done.jobs}
    return [h for h in cached.batch_jobs(pending=True) if h.id not in new]


def _progress(job: BatchJob) -> None:
    c = job.counts
    counts = f" {c.get('completed', 0)}/{c.get('total', 0)} requests" if c else ""
    click.echo(f"{time.strftime('%H:%M:%S')} {job.id}: {job.state}{counts}", err=True)


def _report(result: Collected) -> None:
    job = result.job
    if not result.ready:
        click.echo(f"{job.id}: still {job.state}, nothing to collect yet")
        return
    if result.already:
        click.echo(f"{job.id}: already collected")
        return
    click.echo(
        f"{job.id}: {job.collected.get('provider_state', 'finished')}, collected {count(result.items, 'vector')} "
        f"({result.tokens:,} tokens at the batch price)"
        + (
            f", {count(len(result.failed), 'failed request')} left as misses"
            if result.failed
            else ""
        )
    )
    for line in result.failed[:20]:
        click.echo(f"  failed {printable(line)}", err=True)


@click.group()
def batch() -> None:
    """Batch-API jobs recorded in the cache: list, collect, cancel."""


def _store(cache_url: str | None) -> Any:
    from .stores import open_store

    return open_store(cache_url, create=False)


def _row(job: BatchJob) -> dict[str, Any]:
    from .usage import day_iso

    return {
        "job": job.id,
        "batch_id": job.batch_id,
        "provider": job.provider,
        "model": job.config.get("model_name"),
        "state": job.state,
        "items": job.item_count,
        "requests": len(job.requests),
        "counts": job.counts,
        "created": day_iso(job.created // 86400),
        "collected": job.collected,
        "errors": job.errors[:5],
    }


@batch.command()
@CACHE_OPTION
@click.option(
    "--refresh/--no-refresh",
    default=True,
    show_default=True,
    help="Ask the provider for the state of unfinished jobs (needs their API keys).",
)
@JSON_OPTION
def status(cache_url: str | None, refresh: bool, as_json: bool) -> None:
    """List the cache's batch jobs and their state."""
    from .batchjobs import JobHandle

    store = _store(cache_url)
    jobs = store.jobs()
    if refresh:
        jobs = [JobHandle(store, j.id).status() if j.pending else j for j in jobs]
    rows = [_row(j) for j in jobs]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no batch jobs")
        return
    for r in rows:
        c = r["counts"]
        requests = (
            f"{c.get('completed', 0)}/{c.get('total', r['requests'])}"
            if c
            else f"0/{r['requests']}"
        )
        failed = f", {c['failed']} failed" if c.get("failed") else ""
        click.echo(
            printable(
                f"{r['job']}  {r['provider']}/{r['model']}  {r['state']}  {count(r['items'], 'text')}  "
                f"requests {requests}{failed}  created {r['created']}  batch {r['batch_id'] or '-'}"
            )
        )


@batch.command()
@CACHE_OPTION
@click.argument("job", required=False)
def collect(cache_url: str | None, job: str | None) -> None:
    """Store the results of finished jobs (all of them, or JOB); safe to run twice or from cron."""
    from .batchjobs import JobHandle, collect_all

    store = _store(cache_url)
    if job is not None:
        results = [JobHandle(store, _job_id(store, job)).collect()]
    else:
        results = collect_all(store)
        if not results:
            click.echo("no pending batch jobs")
    for result in results:
        _report(result)


@batch.command()
@CACHE_OPTION
@click.argument("job")
def cancel(cache_url: str | None, job: str) -> None:
    """Cancel JOB at the provider; `batch collect` then keeps what it finished."""
    from .batchjobs import JobHandle

    store = _store(cache_url)
    result = JobHandle(store, _job_id(store, job)).cancel()
    click.echo(f"{result.id}: {result.state}")


def _job_id(store: Any, job: str) -> str:
    found = store.job(job)
    if found is None:
        raise _fail(
            f"no batch job {job!r} in cache {store.url}; `cachedembed batch status` lists them"
        )
    return str(found.id)
