"""Gemini's batch mode for embeddings, as a :class:`~cachedembed.batchapi.BatchAdapter`.

Wire format (checked against the google-genai SDK's ``files`` and ``batches`` modules and
Google's batch-mode guide): a JSONL file of ``{"key", "request": {"content": {"parts":
[{"text"}]}, "task_type", "output_dimensionality"}}`` lines, one text each, uploaded with
the Files API's resumable upload (``mime_type="jsonl"``); ``batches.create_embeddings``
(``POST models/{model}:asyncBatchEmbedContent``, *experimental* in the SDK, Gemini
Developer API only, not Vertex AI) names the file and carries the cachedembed job id as
its display name. The job's ``dest.file_name`` is a JSONL file of ``{"key", "response":
{"embedding": {"values"}}}`` or ``{"key", "error": {"code", "message"}}`` lines in any
order, downloaded with ``files.download``.

Gemini reports no token usage, in batch mode as synchronously: results carry the same
estimate the synchronous function records, flagged as estimated
(:attr:`~cachedembed.batchapi.BatchAdapter.reports_usage` is false).
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import numpy as np

from ..batchapi import BatchAdapter, JobLimits, Remote, Result, result_line
from ._base import as_matrix

if TYPE_CHECKING:
    from ..keys import Role
    from .google import GoogleGeminiEmbeddingFunction

T = TypeVar("T")

LIMITS = JobLimits(
    inputs_per_request=1,  # a line is one EmbedContentRequest: one content
    tokens_per_request=None,  # over-long texts fail alone, as that request's error
    requests_per_job=50_000,  # no documented count; keeps one job's file small to build
    bytes_per_file=2 * 1024 * 1024 * 1024,  # the batch-mode input file limit (2 GB)
    inputs_per_job=50_000,
)

_STATES = {
    "JOB_STATE_UNSPECIFIED": "validating",
    "JOB_STATE_QUEUED": "validating",
    "JOB_STATE_PENDING": "validating",
    "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_UPDATING": "in_progress",
    "JOB_STATE_PAUSED": "in_progress",
    "JOB_STATE_CANCELLING": "cancelling",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",  # failed lines are in the file as errors
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
"""Gemini's job states (as the SDK names them) -> the shared mechanism's."""


class GeminiBatchAdapter(BatchAdapter):
    provider = "gemini"
    limits = LIMITS
    reports_usage = False

    def __init__(self, ef: GoogleGeminiEmbeddingFunction, role: Role) -> None:
        self.ef = ef
        self.task = ef.task(role)

    def _call(self, fn: Callable[[], T]) -> T:
        """One SDK call with the provider's retries and error mapping, key scrubbed."""
        return self.ef.retrying(lambda: self.ef.call_client(fn))

    def request_line(self, custom_id: str, texts: list[str]) -> bytes:
        (text,) = texts
        request: dict[str, Any] = {"content": {"parts": [{"text": text}]}, "task_type": self.task}
        if self.ef.dimension is not None:
            request["output_dimensionality"] = self.ef.dimension
        line = {"key": custom_id, "request": request}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def upload(self, job_id: str, content: bytes) -> str:
        client = self.ef.client

        def send() -> Any:  # a fresh stream per attempt: a retry re-reads it from the start
            config = {"mime_type": "jsonl", "display_name": job_id}
            return client.files.upload(file=io.BytesIO(content), config=config)

        return str(self._call(send).name)

    def create(self, job_id: str, input_file_id: str) -> str:
        client = self.ef.client

        def start() -> Any:
            with warnings.catch_warnings():  # "experimental": the documented API all the same
                warnings.simplefilter("ignore")
                return client.batches.create_embeddings(
                    model=self.ef.model_name,
                    src={"file_name": input_file_id},
                    config={"display_name": job_id},
                )

        return str(self._call(start).name)

    def find(self, job_id: str, input_file_id: str) -> str | None:
        client = self.ef.client
        pager = self._call(lambda: client.batches.list(config={"page_size": 100}))
        for batch in pager:  # auto-paginates
            if batch.display_name == job_id:
                return str(batch.name)
        return None

    def poll(self, batch_id: str) -> Remote:
        client = self.ef.client
        return _remote(self._call(lambda: client.batches.get(name=batch_id)))

    def cancel(self, batch_id: str) -> Remote:
        client = self.ef.client
        self._call(lambda: client.batches.cancel(name=batch_id))  # answers nothing: ask again
        return self.poll(batch_id)

    def download(self, file_id: str, out: BinaryIO) -> None:
        client = self.ef.client

        def fetch() -> None:
            out.seek(0)
            out.truncate()
            client.files.download(file=file_id, destination=out)  # streamed in chunks

        self._call(fetch)

    def parse(self, n: int, raw: bytes) -> Result:
        return _result(n, raw)

    def vectors(self, data: Any, expected: int) -> np.ndarray:
        return as_matrix(self.provider, [data], expected, self.ef.dimension)

    def config(self) -> dict[str, Any]:
        # The task is fixed, so the rebuilt function sends this job's role's task whoever collects.
        return {**self.ef.get_config(), "task_type": self.task}


def _remote(batch: Any) -> Remote:
    state = str(getattr(batch.state, "value", batch.state))
    dest = batch.dest
    end = batch.end_time
    return Remote(
        status=_STATES.get(state, "in_progress"),
        output_file_id=dest.file_name if dest is not None else None,
        finished=int(end.timestamp()) if isinstance(end, datetime) else None,
    )


def _result(n: int, raw: bytes) -> Result:
    """One output line; anything malformed becomes an error result (a miss), never data."""
    parsed = result_line(n, raw, "key")
    if isinstance(parsed, Result):
        return parsed
    line, key = parsed
    error = line.get("error")
    if error is not None:
        detail = error if isinstance(error, dict) else {"message": str(error)}
        return Result(
            key, error=f"{detail.get('code', 'error')}: {detail.get('message') or 'failed'}"
        )
    response = line.get("response")
    embedding = response.get("embedding") if isinstance(response, dict) else None
    values = embedding.get("values") if isinstance(embedding, dict) else None
    if values is None:
        return Result(key, error="no embedding in the response")
    return Result(key, data=values)
