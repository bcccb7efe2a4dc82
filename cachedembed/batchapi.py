"""What a provider's batch interface offers the shared batch job mechanism (:mod:`cachedembed.batchjobs`).

Kept apart from the mechanism so that adapters import only this, and the mechanism can
import the providers (to rebuild a job's adapter) without a cycle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np


@dataclass(frozen=True)
class JobLimits:
    """What one request and one job may hold (the provider's documented limits)."""

    inputs_per_request: int
    tokens_per_request: int | None
    requests_per_job: int
    bytes_per_file: int
    inputs_per_job: int


@dataclass
class Remote:
    """A job as the provider reports it."""

    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    finished: int | None = None


@dataclass
class Result:
    """One request's outcome from the output or error file."""

    custom_id: str
    data: Any = None
    """The provider's per-request vectors payload (validated by the adapter's ``vectors``)."""
    tokens: int | None = None
    error: str | None = None


def result_line(n: int, raw: bytes, id_field: str) -> tuple[dict[str, Any], str] | Result:
    """Line ``n`` of a result file as a JSON object and the request id under ``id_field``;
    a malformed line is an error :class:`Result` (a miss), never data."""
    try:
        line = json.loads(raw)
        request_id = line[id_field]
    except (ValueError, KeyError, TypeError):
        return Result(custom_id=f"<line {n}>", error="not a JSON result line")
    if not isinstance(request_id, str):
        return Result(custom_id=f"<line {n}>", error=f"{id_field} is not a string")
    return line, request_id


class BatchAdapter(ABC):
    """What a provider's batch interface must offer the shared mechanism."""

    provider: str
    limits: JobLimits
    reports_usage = True
    """False: results carry no token counts (Gemini); each request is billed at the estimate
    made when it was submitted, flagged as estimated, as the synchronous function records it.
    True: a result without usage fails (better a miss than a guess)."""

    @abstractmethod
    def request_line(self, custom_id: str, texts: list[str]) -> bytes:
        """One line of the request file (JSON, no newline) asking for ``texts``' vectors."""

    @abstractmethod
    def upload(self, job_id: str, content: bytes) -> str:
        """Upload the request file; return its file id."""

    @abstractmethod
    def create(self, job_id: str, input_file_id: str) -> str:
        """Start the job on ``input_file_id``, tagged with ``job_id``; return the provider's id."""

    @abstractmethod
    def find(self, job_id: str, input_file_id: str) -> str | None:
        """The provider's id of a job already created for ``job_id`` (a killed submitter), if any."""

    @abstractmethod
    def poll(self, batch_id: str) -> Remote: ...

    @abstractmethod
    def download(self, file_id: str, out: BinaryIO) -> None:
        """Write an output or error file's bytes to ``out`` as they arrive (never whole in memory).

        A retried download starts ``out`` again from its beginning.
        """

    @abstractmethod
    def parse(self, n: int, raw: bytes) -> Result:
        """Line ``n`` of an output or error file as a result (an error result when malformed)."""

    @abstractmethod
    def vectors(self, data: Any, expected: int) -> np.ndarray:
        """Validated (expected, dim) float32 vectors of one result; raises ``ProviderResponseError``."""

    @abstractmethod
    def cancel(self, batch_id: str) -> Remote: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Secret-free settings from which :func:`~cachedembed.batchjobs.adapter_for` rebuilds this adapter elsewhere."""
