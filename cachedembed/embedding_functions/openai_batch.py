"""OpenAI's Batch API for ``/v1/embeddings``, as a :class:`~cachedembed.batchapi.BatchAdapter`.

Wire format (checked against the openai SDK's ``files`` and ``batches`` resources): a JSONL
file of ``{"custom_id", "method": "POST", "url": "/v1/embeddings", "body": {...}}`` lines
uploaded with ``purpose="batch"``; ``batches.create(input_file_id, endpoint="/v1/embeddings",
completion_window="24h", metadata={"cachedembed_job": ...})``; output and error files are
JSONL lines ``{"custom_id", "response": {"status_code", "body"}, "error"}`` in any order.
Limits: 50,000 requests and 200 MB per file, 50,000 embedding inputs per batch, 2,048
inputs per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import numpy as np

from ..batchapi import BatchAdapter, JobLimits, Remote, Result, result_line
from ..redact import url_secrets
from ._http import transport_error
from ._remote import indexed_vectors

if TYPE_CHECKING:
    from .openai import OpenAIEmbeddingFunction

T = TypeVar("T")

LIMITS = JobLimits(
    inputs_per_request=2048,
    tokens_per_request=300_000,
    requests_per_job=50_000,
    bytes_per_file=200 * 1024 * 1024,
    inputs_per_job=50_000,
)
METADATA_KEY = "cachedembed_job"


class OpenAIBatchAdapter(BatchAdapter):
    provider = "openai"
    limits = LIMITS

    def __init__(self, ef: OpenAIEmbeddingFunction) -> None:
        self.ef = ef

    def _call(self, fn: Callable[[], T]) -> T:
        """One SDK call with the provider's retries and its SDK-error mapping, key scrubbed."""
        return self.ef.retrying(lambda: self.ef.call_client(fn))

    def request_line(self, custom_id: str, texts: list[str]) -> bytes:
        body: dict[str, Any] = {
            "model": self.ef.model_name,
            "input": texts,
            "encoding_format": "base64",
        }
        if self.ef.sends_dimensions:
            body["dimensions"] = self.ef.dimensions
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def upload(self, job_id: str, content: bytes) -> str:
        client = self.ef.client
        result = self._call(
            lambda: client.files.create(file=(f"{job_id}.jsonl", content), purpose="batch")
        )
        return str(result.id)

    def create(self, job_id: str, input_file_id: str) -> str:
        client = self.ef.client
        batch = self._call(
            lambda: client.batches.create(
                input_file_id=input_file_id,
                endpoint="/v1/embeddings",
                completion_window="24h",
                metadata={METADATA_KEY: job_id},
            )
        )
        return str(batch.id)

    def find(self, job_id: str, input_file_id: str) -> str | None:
        client = self.ef.client
        page = self._call(lambda: client.batches.list(limit=100))
        for batch in page:  # newest first; auto-paginates
            meta = batch.metadata or {}
            if meta.get(METADATA_KEY) == job_id or batch.input_file_id == input_file_id:
                return str(batch.id)
        return None

    def poll(self, batch_id: str) -> Remote:
        client = self.ef.client
        return _remote(self._call(lambda: client.batches.retrieve(batch_id)))

    def cancel(self, batch_id: str) -> Remote:
        client = self.ef.client
        return _remote(self._call(lambda: client.batches.cancel(batch_id)))

    def download(self, file_id: str, out: BinaryIO) -> None:
        client = self.ef.client

        def fetch() -> None:
            out.seek(0)
            out.truncate()
            try:
                with client.files.with_streaming_response.content(file_id) as response:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            except Exception as exc:  # cut mid-body: the SDK leaves these unwrapped
                mapped = transport_error(self.provider, exc, None)
                if mapped is None:
                    raise
                raise mapped from None

        self._call(fetch)

    def parse(self, n: int, raw: bytes) -> Result:
        return _result(n, raw)

    def vectors(self, data: Any, expected: int) -> np.ndarray:
        return indexed_vectors(self.provider, data, expected)

    def config(self) -> dict[str, Any]:
        config = self.ef.get_config()
        base = self.ef.base_url
        if config.get("api_base") is None and base and not url_secrets(base):
            config["api_base"] = (
                base  # from $OPENAI_BASE_URL: collect on another machine reaches it too
            )
        return config


def _remote(batch: Any) -> Remote:
    counts = batch.request_counts
    finished = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    return Remote(
        status=str(batch.status),
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        counts={"total": counts.total, "completed": counts.completed, "failed": counts.failed}
        if counts is not None
        else {},
        finished=finished,
    )


def _result(n: int, raw: bytes) -> Result:
    """One output/error line; anything malformed becomes an error result (a miss), never data."""
    parsed = result_line(n, raw, "custom_id")
    if isinstance(parsed, Result):
        return parsed
    line, custom_id = parsed
    error = line.get("error")
    response = _mapping(line.get("response"))
    status = response.get("status_code")
    body = _mapping(response.get("body"))
    if error or status != 200:
        detail = error or body.get("error") or {}
        message = detail.get("message") if isinstance(detail, dict) else str(detail)
        return Result(custom_id, error=f"HTTP {status}: {message or 'failed'}")
    usage = _mapping(body.get("usage"))
    tokens = usage.get("prompt_tokens")
    return Result(
        custom_id,
        data=body.get("data"),
        tokens=tokens if type(tokens) is int and tokens >= 0 else None,
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
