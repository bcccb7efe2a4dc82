"""A loopback server speaking Gemini's Files and batch-mode wire format, for the real google-genai SDK.

The routes the SDK uses: the resumable upload (``POST /upload/v1beta/files`` with
``X-Goog-Upload-Protocol: resumable`` / ``Command: start``, answered with an
``X-Goog-Upload-URL``; then the bytes with ``Command: upload, finalize``),
``POST /v1beta/models/{model}:asyncBatchEmbedContent``, ``GET /v1beta/batches`` (list),
``GET /v1beta/batches/{id}``, ``POST /v1beta/batches/{id}:cancel`` and
``GET /v1beta/files/{id}:download?alt=media``. Jobs are long-running operations whose
``metadata`` holds ``state`` (``BATCH_STATE_*``) and ``output.responsesFile``.

Uploaded lines are checked (``key`` unique, ``request.content.parts[0].text`` non-empty,
a valid ``task_type``). Each status read moves a job PENDING -> RUNNING -> SUCCEEDED
unless the test holds it, makes it expire (``expire``: only the first ``partial`` requests
answered) or cancels it. Result lines come in reverse order; ``fail`` turns a key's line
into an error line. Vectors are the synchronous fake's (``GeminiFake``): both paths give
the same bits. No line carries token usage, as Gemini reports none.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.providers.loopback import Reply, Request
from tests.providers.test_google import TASKS, GeminiFake

STEPS = ["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"]
DONE = {
    "BATCH_STATE_SUCCEEDED",
    "BATCH_STATE_FAILED",
    "BATCH_STATE_EXPIRED",
    "BATCH_STATE_CANCELLED",
}
TIME = "2026-12-02T12:00:00Z"


@dataclass
class FakeJob:
    id: str
    display_name: str
    requests: list[dict[str, Any]]
    state: str = "BATCH_STATE_PENDING"
    cancelling: bool = False
    responses_file: str | None = None


class FakeGeminiBatchAPI:
    """The handler; tests steer outcomes through its attributes (as :class:`FakeBatchAPI`)."""

    key = GeminiFake.key
    model = GeminiFake.model

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, int] = {}
        """Upload session -> announced size."""
        self.jobs: dict[str, FakeJob] = {}
        self.fail: dict[str, str] = {}
        """key -> error message: those requests fail (an error line)."""
        self.hold = False
        self.expire = False
        self.partial = 1
        self.instant = False
        self.embeddings_calls = 0
        self._lock = threading.Lock()
        self._sync = GeminiFake()

    # -- helpers for tests -------------------------------------------------------------

    def uploaded_lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for name, content in self.files.items()
            if name.startswith("files/in-")
            for line in content.splitlines()
        ]

    def expected(self, texts: list[str], task: str = "RETRIEVAL_DOCUMENT") -> Any:
        return np.stack([self.vector(t, {"task_type": task}) for t in texts])

    def vector(self, text: str, request: dict[str, Any]) -> np.ndarray:
        fields = {
            "taskType": request.get("task_type"),
            "outputDimensionality": request.get("output_dimensionality"),
        }
        return self._sync.vector(text, Request("POST", "", {}, fields))

    # -- the handler -------------------------------------------------------------------

    def __call__(self, request: Request) -> Reply:
        path, _, query = request.path.partition("?")
        with self._lock:
            if path.startswith("/upload-session/"):
                return self._receive(request, path.rsplit("/", 1)[-1])
            if request.headers.get("x-goog-api-key") != self.key:
                return _error(
                    400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"
                )
            if request.method == "POST" and path == "/upload/v1beta/files":
                return self._start_upload(request)
            if (
                request.method == "POST"
                and path == f"/v1beta/models/{self.model}:asyncBatchEmbedContent"
            ):
                return self._create(request)
            if request.method == "POST" and path.endswith(":batchEmbedContents"):
                self.embeddings_calls += 1
                return _error(500, "this test expects no synchronous embeddings", "INTERNAL")
            if request.method == "GET" and path == "/v1beta/batches":
                return Reply(
                    200, {"operations": [self._operation(j) for j in reversed(self.jobs.values())]}
                )
            if path.startswith("/v1beta/batches/"):
                name, _, verb = path[len("/v1beta/") :].partition(":")
                job = self.jobs.get(name)
                if job is None:
                    return _error(404, f"Batch {name} not found.", "NOT_FOUND")
                if request.method == "POST" and verb == "cancel":
                    return self._cancel(job)
                if request.method == "GET" and not verb:
                    self._advance(job)
                    return Reply(200, self._operation(job))
            if (
                request.method == "GET"
                and path.startswith("/v1beta/files/")
                and path.endswith(":download")
            ):
                content = self.files.get(path[len("/v1beta/") : -len(":download")])
                if content is None or query != "alt=media":
                    return _error(404, "File not found.", "NOT_FOUND")
                return Reply(200, raw=content, headers={"Content-Type": "application/octet-stream"})
        return _error(404, f"unknown route {request.method} {path}", "NOT_FOUND")

    def _start_upload(self, request: Request) -> Reply:
        h = request.headers
        if (h.get("x-goog-upload-protocol"), h.get("x-goog-upload-command")) != (
            "resumable",
            "start",
        ):
            return _error(400, "expected a resumable upload start", "INVALID_ARGUMENT")
        if h.get("x-goog-upload-header-content-type") != "jsonl":
            return _error(400, "batch input must be jsonl", "INVALID_ARGUMENT")
        session = str(len(self.uploads) + 1)
        self.uploads[session] = int(h.get("x-goog-upload-header-content-length", "-1"))
        host = h.get("host", "")
        return Reply(
            200,
            {},
            headers={
                "X-Goog-Upload-URL": f"http://{host}/upload-session/{session}",
                "X-Goog-Upload-Status": "active",
            },
        )

    def _receive(self, request: Request, session: str) -> Reply:
        size = self.uploads.get(session)
        command = request.headers.get("x-goog-upload-command")
        if (
            size is None
            or command != "upload, finalize"
            or request.headers.get("x-goog-upload-offset") != "0"
        ):
            return Reply(
                400,
                {"error": {"message": "one finalizing chunk expected"}},
                headers={"X-Goog-Upload-Status": "final"},
            )
        problem = None if len(request.raw) == size else "size differs from the announced one"
        problem = problem or _bad_lines(request.raw)
        if problem:
            return Reply(
                400,
                {"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}},
                headers={"X-Goog-Upload-Status": "final"},
            )
        name = f"files/in-{session}"
        self.files[name] = request.raw
        file = {"name": name, "mimeType": "jsonl", "sizeBytes": str(size), "state": "ACTIVE"}
        return Reply(200, {"file": file}, headers={"X-Goog-Upload-Status": "final"})

    def _create(self, request: Request) -> Reply:
        batch = request.body.get("batch") or {}
        source = batch.get("inputConfig", {}).get("file_name")
        content = self.files.get(source or "")
        if content is None:
            return _error(400, f"unknown input file {source!r}", "INVALID_ARGUMENT")
        job = FakeJob(
            f"batches/{len(self.jobs) + 1}",
            batch.get("displayName", ""),
            [json.loads(line) for line in content.splitlines()],
        )
        self.jobs[job.id] = job
        return Reply(200, self._operation(job))

    def _cancel(self, job: FakeJob) -> Reply:
        if job.state in DONE:
            return _error(400, f"batch is already {job.state}", "FAILED_PRECONDITION")
        job.cancelling = True
        return Reply(200, {})

    def _advance(self, job: FakeJob) -> None:
        if job.state in DONE:
            return
        if job.cancelling:
            self._finish(job, "BATCH_STATE_CANCELLED", self.partial)
        elif self.hold:
            job.state = "BATCH_STATE_RUNNING"
        elif self.instant or job.state == "BATCH_STATE_RUNNING":
            if self.expire:
                self._finish(job, "BATCH_STATE_EXPIRED", self.partial)
            else:
                self._finish(job, "BATCH_STATE_SUCCEEDED", len(job.requests))
        else:
            job.state = STEPS[STEPS.index(job.state) + 1]

    def _finish(self, job: FakeJob, state: str, upto: int) -> None:
        lines = []
        for line in job.requests[:upto]:
            key, req = line["key"], line["request"]
            if key in self.fail:
                lines.append(
                    {
                        "key": key,
                        "error": {
                            "code": 400,
                            "message": self.fail[key],
                            "status": "INVALID_ARGUMENT",
                        },
                    }
                )
                continue
            vector = self.vector(req["content"]["parts"][0]["text"], req)
            lines.append(
                {"key": key, "response": {"embedding": {"values": [float(x) for x in vector]}}}
            )
        lines.reverse()  # result order is not request order
        if lines:
            job.responses_file = f"files/out-{job.id.rsplit('/', 1)[-1]}"
            self.files[job.responses_file] = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        job.state = state

    def _operation(self, job: FakeJob) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.EmbedContentBatch",
            "model": f"models/{self.model}",
            "displayName": job.display_name,
            "state": job.state,
            "createTime": TIME,
            "updateTime": TIME,
        }
        if job.state in DONE:
            metadata["endTime"] = TIME
        if job.responses_file:
            metadata["output"] = {"responsesFile": job.responses_file}
        return {"name": job.id, "metadata": metadata, "done": job.state in DONE}


def _bad_lines(content: bytes) -> str | None:
    keys = set()
    for n, raw in enumerate(content.splitlines(), 1):
        try:
            line = json.loads(raw)
            req = line["request"]
            text = req["content"]["parts"][0]["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"line {n} is not an embedding request line"
        if line["key"] in keys or not text or req.get("task_type") not in TASKS:
            return f"line {n}: repeated key, empty text or bad task_type"
        keys.add(line["key"])
    return None


def _error(code: int, message: str, status: str) -> Reply:
    return Reply(code, {"error": {"code": code, "message": message, "status": status}})
