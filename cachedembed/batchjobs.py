"""Bulk misses through providers' batch APIs (half price, results within hours), resumable from the cache.

One mechanism for every provider; a provider contributes a small :class:`BatchAdapter`
(request line format, upload, create, poll, download, cancel). The cache records each
job (:class:`~cachedembed.stores.base.BatchJob`) *before* anything is sent, so:

* a submitter killed at any point is resumed by the next ``status``/``collect``: a job
  whose file was uploaded is created (or found, by the job id sent as batch metadata);
* collecting is a compare-and-set on the job in the same transaction as the vectors and
  the counters that paid for them: run it twice, from cron or from a second machine, and
  each result is stored and counted once; a crash in the middle stores nothing;
* texts in a pending job are not submitted again, and ``Cached`` refuses (or waits for)
  them instead of paying the synchronous price.

Failed requests (the error file, or results that do not validate) are reported and left
as misses; an expired or cancelled job keeps the results it has.

Collecting runs in bounded memory whatever the job's size: the result files are streamed
to temporary files (``$TMPDIR``), read line by line twice (validate everything, then
write), and vectors are written in chunks of about :data:`WRITE_CHUNK` entries inside the one
transaction.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .batchapi import BatchAdapter, Remote, Result
from .errors import (
    CachedEmbedError,
    ConfigurationError,
    ProviderError,
    ProviderResponseError,
)
from .stores.base import (
    FLAG_TOKENS_ESTIMATED,
    JOB_COLLECTED,
    BatchJob,
    EntryBatch,
    Namespace,
    Store,
)
from .usage import UsageDelta, apportion, estimate_tokens

if TYPE_CHECKING:
    from .keys import Role
    from .wrapper import Cached

log = logging.getLogger("cachedembed")

SUBMITTING = "submitting"
RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
"""Provider states of a job that is still working."""
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
"""Provider states after which nothing more will come: time to collect."""
MAX_ERRORS_KEPT = 50
WRITE_CHUNK = 2048
"""Entries per store write while collecting: small requests are joined up to this many."""


def adapter_for(job: BatchJob) -> BatchAdapter:
    """The adapter that reaches ``job``'s provider again, from the job's recorded config."""
    if job.provider == "openai":
        from .embedding_functions.openai import OpenAIEmbeddingFunction

        return OpenAIEmbeddingFunction(**job.config).batch_adapter()  # type: ignore[arg-type]
    if job.provider == "gemini":
        from .embedding_functions.google import GoogleGeminiEmbeddingFunction

        # The config fixes the task type, so the role does not matter here.
        return GoogleGeminiEmbeddingFunction(**job.config).batch_adapter()  # type: ignore[arg-type]
    raise ConfigurationError(f"job {job.id}: no batch support for provider {job.provider!r}")


# -- planning -------------------------------------------------------------------


@dataclass
class _Item:
    id: int
    check: int
    weight: int
    text: str


def plan(adapter: BatchAdapter, items: list[_Item]) -> list[list[tuple[str, list[_Item], bytes]]]:
    """Split ``items`` into requests and requests into jobs, within every limit.

    Each request is ``(custom_id, items, request line)``; a job's file is its lines joined.
    """
    from .embedding_functions._base import batches

    lim = adapter.limits
    texts = [it.text for it in items]
    jobs: list[list[tuple[str, list[_Item], bytes]]] = [[]]
    size = inputs = 0
    for start, chunk in batches(texts, lim.inputs_per_request, lim.tokens_per_request):
        part = items[start : start + len(chunk)]
        custom_id = f"r{start}"
        line = adapter.request_line(custom_id, list(chunk))
        if len(line) + 1 > lim.bytes_per_file:
            raise ConfigurationError(
                f"{adapter.provider}: one request of {len(chunk)} texts is {len(line):,} bytes, "
                f"over the {lim.bytes_per_file:,}-byte file limit"
            )
        current = jobs[-1]
        if current and (
            len(current) >= lim.requests_per_job
            or size + len(line) + 1 > lim.bytes_per_file
            or inputs + len(part) > lim.inputs_per_job
        ):
            jobs.append([])
            current, size, inputs = jobs[-1], 0, 0
        current.append((custom_id, part, line))
        size += len(line) + 1
        inputs += len(part)
    return [j for j in jobs if j]


# -- submitting -------------------------------------------------------------------


@dataclass
class Submitted:
    """What :meth:`Cached.submit_batch` did: the jobs it started and what it left out."""

    jobs: list[JobHandle]
    texts: int
    distinct: int
    """Distinct texts among them (what is looked up and, when missing, sent once)."""
    hits: int
    """Distinct texts already in the cache."""
    pending: int
    """Distinct texts already in a job not yet collected (not submitted again)."""
    submitted: int
    """Distinct texts sent in the new jobs."""


def pending_items(store: Store, ns_id: int) -> dict[int, str]:
    """Item id -> job id for every item of ``ns_id`` in a job not yet collected."""
    covered: dict[int, str] = {}
    for job in store.jobs(pending=True, ns_id=ns_id):
        for items in job.requests.values():
            for item in items:
                covered[item[0]] = job.id
    return covered


def submit(cached: Cached, texts: Sequence[str], role: Role = "document") -> Submitted:
    """Send the misses among ``texts`` (deduplicated, minus pending ones) as batch jobs."""
    from .embedding_functions._base import check_texts

    adapter = batch_adapter_of(cached, role)
    engine = cached._engine
    texts = engine.prepared_texts(check_texts(texts))
    ids, checks = engine.hasher(role).text_key_arrays(texts)
    state = engine.state(role)
    uniq, first = np.unique(ids, return_index=True)
    found = engine.lookup(state, uniq, checks[first])
    missing = np.ones(len(uniq), dtype=bool)
    missing[found.pos] = False
    covered = pending_items(cached.store, state.ns.id)
    order = np.sort(first[missing])  # input order
    weights = estimate_tokens([texts[i] for i in order.tolist()])
    todo: list[_Item] = []
    pending = 0
    for i, w in zip(order.tolist(), weights.tolist()):
        if int(ids[i]) in covered:
            pending += 1
        else:
            todo.append(_Item(int(ids[i]), int(checks[i]), int(w), texts[i]))
    handles = [
        _start(cached, adapter, state.ns, requests)
        for requests in (plan(adapter, todo) if todo else [])
    ]
    return Submitted(
        jobs=handles,
        texts=len(texts),
        distinct=len(uniq),
        hits=len(found.pos),
        pending=pending,
        submitted=len(todo),
    )


def jobs_of(cached: Cached, pending: bool = False) -> list[JobHandle]:
    """Handles of the recorded jobs of ``cached``'s namespaces (only uncollected ones with ``pending``)."""
    ns_ids = {ns.id for ns in cached.namespaces()}
    return [
        JobHandle(cached.store, job.id)
        for job in cached.store.jobs(pending=pending)
        if job.ns in ns_ids
    ]


def batch_adapter_of(cached: Cached, role: Role = "document") -> BatchAdapter:
    make = getattr(cached.ef, "batch_adapter", None)
    if not callable(make):
        raise ConfigurationError(
            f"{type(cached.ef).__name__} has no batch API support; use openai:MODEL "
            "(OpenAIEmbeddingFunction), gemini:MODEL (GoogleGeminiEmbeddingFunction) "
            "or embed synchronously"
        )
    adapter: BatchAdapter = make(role)
    return adapter


def _start(
    cached: Cached,
    adapter: BatchAdapter,
    ns: Namespace,
    requests: list[tuple[str, list[_Item], bytes]],
) -> JobHandle:
    """Record the job, then upload and create it, saving each step (so a kill is resumable)."""
    store = cached.store
    job = BatchJob(
        id=f"ce-{uuid.uuid4().hex}",
        provider=adapter.provider,
        ns=ns.id,
        state=SUBMITTING,
        created=int(time.time()),
        requests={cid: [[it.id, it.check, it.weight] for it in part] for cid, part, _l in requests},
        texts={cid: [it.text for it in part] for cid, part, _l in requests}
        if cached.store_text
        else None,
        config=adapter.config(),
    )
    store.record_job(job)
    content = b"\n".join(line for _c, _p, line in requests) + b"\n"
    try:
        job.input_file_id = adapter.upload(job.id, content)
        _save(store, job)
        job.batch_id = adapter.create(job.id, job.input_file_id)
    except ProviderError as exc:
        if job.input_file_id is None or not exc.retryable:
            # Refused outright (or never uploaded): nothing will run, so its texts must not
            # count as pending. A connection lost during create is left for resume: the
            # provider may have created the job.
            _abandon(store, job, f"submission failed: {exc}")
        raise
    job.state = "validating"
    _save(store, job)
    return JobHandle(store, job.id, adapter)


def _abandon(store: Store, job: BatchJob, why: str) -> None:
    """Finish a job that will never deliver: its texts are misses again."""
    job.state = JOB_COLLECTED
    job.finished = int(time.time())
    job.errors = [why]
    _save(store, job)


def _save(store: Store, job: BatchJob) -> None:
    if not store.update_job(job):
        raise CachedEmbedError(f"job {job.id} was changed by another process meanwhile; run again")


# -- following and collecting ------------------------------------------------------


@dataclass
class Collected:
    """What one collect stored."""

    job: BatchJob
    items: int = 0
    tokens: int = 0
    failed: list[str] = field(default_factory=list)
    """``custom_id: reason`` of each request whose texts stay misses."""
    already: bool = False
    """Another collector stored this job's results first: nothing was stored now."""
    ready: bool = True
    """False: the job is still running; nothing was stored."""


class JobHandle:
    """A recorded job: follow it, wait for it, collect it (from any process that has the cache)."""

    def __init__(self, store: Store, job_id: str, adapter: BatchAdapter | None = None) -> None:
        self.store = store
        self.id = job_id
        self._adapter = adapter

    def job(self) -> BatchJob:
        job = self.store.job(self.id)
        if job is None:
            raise ConfigurationError(
                f"no batch job {self.id} in cache {self.store.url}; `cachedembed batch status` lists them"
            )
        return job

    def adapter(self, job: BatchJob) -> BatchAdapter:
        if self._adapter is None:
            self._adapter = adapter_for(job)
        return self._adapter

    def status(self) -> BatchJob:
        """Ask the provider, record and return the job (resuming an interrupted submission)."""
        return refresh(self.store, self.job(), self.adapter(self.job()))

    def wait(
        self,
        *,
        poll: float = 5.0,
        max_poll: float = 300.0,
        timeout: float | None = None,
        on_poll: Callable[[BatchJob], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> BatchJob:
        """Poll with backoff (``poll`` seconds, doubling up to ``max_poll``) until the job finished."""
        started = time.monotonic()
        delay = poll
        while True:
            job = self.status()
            if on_poll is not None:
                on_poll(job)
            if not job.pending or job.state in FINISHED:
                return job
            if timeout is not None and time.monotonic() - started + delay > timeout:
                raise TimeoutError(f"batch job {self.id} still {job.state} after {timeout:.0f}s")
            sleep(delay)
            delay = min(delay * 2, max_poll)

    def collect(self) -> Collected:
        """Store the results of a finished job (once, whoever asks); a running job stores nothing."""
        job = self.job()
        return collect(self.store, job, self.adapter(job))

    def cancel(self) -> BatchJob:
        job = self.job()
        if not job.pending:
            return job
        adapter = self.adapter(job)
        job = refresh(self.store, job, adapter)
        if job.batch_id is None or job.state in FINISHED:
            return job
        remote = adapter.cancel(job.batch_id)
        return _apply(self.store, job, remote)

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"


def refresh(store: Store, job: BatchJob, adapter: BatchAdapter) -> BatchJob:
    """The job's provider state, recorded; an interrupted submission is finished first."""
    if not job.pending or job.state in FINISHED:
        return job
    if job.state == SUBMITTING:
        return _resume(store, job, adapter)
    assert job.batch_id is not None
    return _apply(store, job, adapter.poll(job.batch_id))


def _resume(store: Store, job: BatchJob, adapter: BatchAdapter) -> BatchJob:
    """A submitter was killed: create the job it uploaded (unless the provider has it already)."""
    if job.input_file_id is None:
        # Killed before the file was uploaded; the texts were never kept: they are misses again.
        _abandon(
            store, job, "submission was interrupted before the upload; its texts are misses again"
        )
        return job
    job.batch_id = adapter.find(job.id, job.input_file_id) or adapter.create(
        job.id, job.input_file_id
    )
    job.state = "validating"
    _save(store, job)
    return _apply(store, job, adapter.poll(job.batch_id))


def _apply(store: Store, job: BatchJob, remote: Remote) -> BatchJob:
    job.state = remote.status
    job.output_file_id = remote.output_file_id
    job.error_file_id = remote.error_file_id
    job.counts = remote.counts
    job.finished = remote.finished
    if not store.update_job(job):
        fresh = store.job(job.id)
        return fresh if fresh is not None else job
    return job


def collect(store: Store, job: BatchJob, adapter: BatchAdapter) -> Collected:
    """Download, validate and store a finished job's results, exactly once (see the module doc)."""
    for _attempt in range(5):
        result = _collect_once(store, job, adapter)
        if result is not None:
            return result
        fresh = store.job(job.id)  # someone updated the job meanwhile: look again
        if fresh is None or not fresh.pending:
            return Collected(fresh or job, already=True)
        job = fresh
    raise CachedEmbedError(f"job {job.id} keeps changing under this collect; run it again")


def _collect_once(store: Store, job: BatchJob, adapter: BatchAdapter) -> Collected | None:
    """One attempt; ``None`` when another process updated the job first (nothing stored)."""
    if not job.pending:
        return Collected(job, already=True)
    job = refresh(store, job, adapter)
    if not job.pending:
        return Collected(job, already=True)
    if job.state not in FINISHED:
        return Collected(job, ready=False)
    ns = next((n for n in store.namespaces() if n.id == job.ns), None)
    if ns is None:
        raise CachedEmbedError(f"job {job.id}: its namespace is no longer in the cache")
    with _ResultFiles(adapter, job) as files:
        good, failed = _validated(adapter, job, ns, store, files)
        out = Collected(job, failed=failed)
        store.flush()  # buffered counters commit now, not inside (and at the mercy of) this transaction
        try:
            with store.bulk():
                provider_state = job.state
                job.state, job.finished = JOB_COLLECTED, job.finished or int(time.time())
                out.items = sum(len(job.requests[c]) for c in good)
                out.tokens = sum(good.values())
                job.collected = {
                    "provider_state": provider_state,
                    "items": out.items,
                    "tokens": out.tokens,
                    "failed_requests": len(failed),
                }
                job.errors = failed[:MAX_ERRORS_KEPT]
                if not store.update_job(job):
                    raise _Lost
                _write_all(store, ns, job, adapter, files, good)
        except _Lost:
            return None
    return out


class _Lost(Exception):
    """Another collector updated the job first: roll this attempt back."""


class _ResultFiles:
    """A finished job's output and error files, downloaded to temporary files, read line by line."""

    def __init__(self, adapter: BatchAdapter, job: BatchJob) -> None:
        self.adapter = adapter
        self.ids = [f for f in (job.output_file_id, job.error_file_id) if f]
        self.files: list[BinaryIO] = []

    def __enter__(self) -> _ResultFiles:
        import tempfile

        try:
            for file_id in self.ids:
                out = tempfile.TemporaryFile(prefix="cachedembed-batch-")
                self.files.append(out)
                self.adapter.download(file_id, out)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for f in self.files:
            f.close()

    def results(self) -> Iterator[Result]:
        """Every result, from the start of the files each time (one line in memory at a time)."""
        for f in self.files:
            f.seek(0)
            for n, raw in enumerate(f, 1):
                if raw.strip():
                    yield self.adapter.parse(n, raw)


def _validated(
    adapter: BatchAdapter, job: BatchJob, ns: Namespace, store: Store, files: _ResultFiles
) -> tuple[dict[str, int], list[str]]:
    """Every result checked before anything is written: known id, count, dimension, finite.

    Returns the tokens of each good request (its vectors are decoded again when written,
    so no more than one request's vectors are held at a time) and the failed ones.
    """
    good: dict[str, int] = {}
    failed: dict[str, str] = {}
    dim = ns.dim if ns.dim is not None else store.known_dimension(ns)
    for r in files.results():
        items = job.requests.get(r.custom_id)
        if items is None:
            log.warning("job %s: ignoring a result for unknown request %r", job.id, r.custom_id)
            continue
        if r.custom_id in good or r.custom_id in failed:
            failed[r.custom_id] = "answered twice"
            good.pop(r.custom_id, None)
            continue
        if r.error is not None:
            failed[r.custom_id] = r.error
            continue
        try:
            vectors = _checked(adapter, r, len(items), dim)
        except ProviderResponseError as exc:
            failed[r.custom_id] = str(exc)
            continue
        dim = vectors.shape[1]
        tokens = r.tokens if adapter.reports_usage else sum(it[2] for it in items)
        if tokens is None:
            failed[r.custom_id] = "no usage reported"  # unbillable: better a miss than a guess
            continue
        good[r.custom_id] = tokens
    for custom_id in job.requests:
        if custom_id not in good and custom_id not in failed:
            failed[custom_id] = f"no result (job {job.state})"
    return good, [f"{c}: {why}" for c, why in failed.items()]


def _checked(adapter: BatchAdapter, r: Result, expected: int, dim: int | None) -> np.ndarray:
    vectors = adapter.vectors(r.data, expected)
    if dim is not None and vectors.shape[1] != dim:
        raise ProviderResponseError(
            adapter.provider,
            f"returned {vectors.shape[1]}-d vectors; this namespace holds {dim}-d ones",
        )
    return vectors


def _write_all(
    store: Store,
    ns: Namespace,
    job: BatchJob,
    adapter: BatchAdapter,
    files: _ResultFiles,
    good: dict[str, int],
) -> None:
    """Second pass: the good requests' vectors, in writes of about :data:`WRITE_CHUNK` entries."""
    chunk = _Chunk(
        np.dtype(ns.spec.dtype).newbyteorder("<"), job.texts is not None, not adapter.reports_usage
    )
    for r in files.results():
        tokens = good.get(r.custom_id)
        if tokens is None or r.error is not None:
            continue
        items = job.requests[r.custom_id]
        vectors = adapter.vectors(r.data, len(items))  # validated in the first pass
        if ns.dim is None:
            store.set_dimension(ns, vectors.shape[1])
        if chunk.size + len(items) > WRITE_CHUNK:
            chunk.write(store, ns.id)  # a write holds one large request, or several small ones
        texts = job.texts.get(r.custom_id) if job.texts is not None else None
        chunk.add(job.provider, items, vectors, tokens, texts)
    chunk.write(store, ns.id)


class _Chunk:
    """Entries of several requests gathered into one store write, with the usage that paid for them."""

    def __init__(self, dtype: np.dtype[Any], with_texts: bool, estimated: bool) -> None:
        self.dtype = dtype
        self.with_texts = with_texts
        self.estimated = estimated
        self._reset()

    def _reset(self) -> None:
        self.ids: list[int] = []
        self.checks: list[int] = []
        self.vectors: list[np.ndarray] = []
        self.tokens: list[int] = []
        self.texts: list[str] = []
        self.calls = self.billed = self.size = 0

    def add(
        self,
        provider: str,
        items: list[list[int]],
        vectors: np.ndarray,
        tokens: int,
        texts: list[str] | None,
    ) -> None:
        with np.errstate(over="ignore"):
            stored = vectors.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            raise ProviderResponseError(provider, "vectors beyond the float16 range; use float32")
        self.ids += [it[0] for it in items]
        self.checks += [it[1] for it in items]
        self.vectors.append(stored)
        self.tokens += apportion(tokens, np.array([it[2] for it in items], dtype=np.int64)).tolist()
        if self.with_texts:
            self.texts += texts or [""] * len(items)
        self.calls += 1
        self.billed += tokens
        self.size += len(items)

    def write(self, store: Store, ns_id: int) -> None:
        if not self.size:
            return
        store.write(
            ns_id,
            EntryBatch(
                ids=self.ids,
                checks=self.checks,
                vectors=np.concatenate(self.vectors),
                tokens=self.tokens,
                flags=[FLAG_TOKENS_ESTIMATED if self.estimated else 0] * self.size,
                texts=self.texts if self.with_texts else None,
            ),
            UsageDelta(
                misses=self.size,
                provider_calls=self.calls,
                tokens_embedded=self.billed,
                tokens_embedded_estimated=self.billed if self.estimated else 0,
                tokens_batch=self.billed,
            ),
        )
        self._reset()


def collect_all(store: Store) -> list[Collected]:
    """Collect every finished job of the cache (the cron job); running ones are only refreshed."""
    out = []
    for job in store.jobs(pending=True):
        out.append(JobHandle(store, job.id).collect())
    return out
