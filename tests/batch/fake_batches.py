"""A loopback server speaking OpenAI's Files and Batches wire format, for the real openai SDK.

``POST /v1/files`` (multipart, ``purpose=batch``), ``POST /v1/batches``, ``GET /v1/batches``
(list), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel`` and
``GET /v1/files/{id}/content``, with the documented checks (JSONL lines with
``custom_id``/``method``/``url``/``body``, unique custom ids, at most 50,000 requests and
50,000 embedding inputs, 2,048 inputs per request) and the documented answer shapes.

Each status read moves a job one step along validating -> in_progress -> finalizing ->
completed, unless the test holds it (``hold``), makes it expire (``expire``: only the
first ``partial`` requests done) or cancels it. Output lines come in reverse request
order (order is not guaranteed); failed requests go to the error file. Vectors and
tokens are the synchronous fake's (``OpenAIFake``), so both paths give the same bits.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tests.conftest import fake_vector
from tests.providers.fakes import DIM, encode, tokens_of
from tests.providers.loopback import LoopbackServer, Reply, Request
from tests.providers.test_openai import OpenAIFake

STEPS = ["validating", "in_progress", "finalizing", "completed"]


@dataclass
class FakeJob:
    id: str
    input_file_id: str
    metadata: dict[str, str]
    requests: list[dict[str, Any]]
    status: str = "validating"
    created_at: int = field(default_factory=lambda: int(time.time()))
    output_file_id: str | None = None
    error_file_id: str | None = None
    done: int = 0
    failed: int = 0
    finished_at: int | None = None


class FakeBatchAPI:
    """The handler; tests steer outcomes through its attributes."""

    key = OpenAIFake.key

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.fail: dict[str, str] = {}
        """custom_id -> error message: those requests fail (error file)."""
        self.hold = False
        """Keep jobs in_progress."""
        self.expire = False
        """Jobs expire instead of completing, with only ``partial`` requests done."""
        self.partial = 1
        self.create_seen = threading.Event()
        self.release_create = threading.Event()
        self.release_create.set()
        self.created = threading.Event()
        self.reject_upload = False
        """Answer uploads with 400 (a file the service refuses)."""
        self.instant = False
        """A status read finishes the job at once (for command-line runs)."""
        self.embeddings_calls = 0
        self.dim = DIM
        """Width of the vectors the jobs return (the synchronous fake's by default)."""
        self._lock = threading.Lock()
        self._sync = OpenAIFake()

    # -- helpers for tests -------------------------------------------------------------

    def uploaded_lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for purpose, content in self.files.values()
            if purpose == "batch"
            for line in content.splitlines()
        ]

    def expected(self, texts: list[str]) -> Any:
        request = Request("POST", "/v1/embeddings", {}, {"model": self._sync.model})
        return np.stack([self.vector(t, request) for t in texts])

    def vector(self, text: str, request: Request) -> np.ndarray:
        return fake_vector(text, self.dim, self._sync.salt(request))

    # -- the handler -------------------------------------------------------------------

    def __call__(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return _error(401, "bad credential")
        path = request.path.split("?")[0]
        with self._lock:
            if request.method == "POST" and path == "/v1/files":
                return self._upload(request)
            if request.method == "POST" and path == "/v1/batches":
                return self._create_gate(request)
            if request.method == "GET" and path == "/v1/batches":
                jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
                data = [self._batch(j) for j in jobs]
                return Reply(200, {"object": "list", "data": data, "has_more": False})
            parts = path.strip("/").split("/")
            if parts[:2] == ["v1", "batches"] and len(parts) >= 3:
                job = self.jobs.get(parts[2])
                if job is None:
                    return _error(404, f"No batch found with id '{parts[2]}'")
                if request.method == "POST" and parts[3:] == ["cancel"]:
                    return self._cancel(job)
                if request.method == "GET" and len(parts) == 3:
                    self._advance(job)
                    return Reply(200, self._batch(job))
            if parts[:2] == ["v1", "files"] and parts[3:] == ["content"]:
                stored = self.files.get(parts[2])
                if stored is None:
                    return _error(404, f"No such File object: {parts[2]}")
                return Reply(
                    200, raw=stored[1], headers={"Content-Type": "application/octet-stream"}
                )
            if path == "/v1/embeddings":
                self.embeddings_calls += 1
                return _error(500, "this test expects no synchronous embeddings")
        return _error(404, f"unknown route {request.method} {path}")

    def _create_gate(self, request: Request) -> Reply:
        self.create_seen.set()
        self._lock.release()
        try:
            self.release_create.wait(timeout=30)
        finally:
            self._lock.acquire()
        return self._create(request)

    def _upload(self, request: Request) -> Reply:
        if self.reject_upload:
            return _error(400, "file rejected")
        fields = _multipart(request)
        if fields.get("purpose") != b"batch":
            return _error(400, f"purpose must be batch, got {fields.get('purpose')!r}")
        content = fields.get("file")
        if content is None:
            return _error(400, "missing file")
        if len(content) > 200 * 1024 * 1024:
            return _error(400, "file over 200 MB")
        lines = content.splitlines()
        if len(lines) > 50_000:
            return _error(400, "more than 50,000 requests")
        seen = set()
        for n, raw in enumerate(lines, 1):
            try:
                line = json.loads(raw)
            except ValueError:
                return _error(400, f"line {n} is not JSON")
            if set(line) != {"custom_id", "method", "url", "body"} or line["custom_id"] in seen:
                return _error(400, f"line {n}: bad keys or repeated custom_id")
            seen.add(line["custom_id"])
            body = line["body"]
            if line["method"] != "POST" or line["url"] != "/v1/embeddings":
                return _error(400, f"line {n}: method/url must be POST /v1/embeddings")
            if body.get("model") != self._sync.model or not isinstance(body.get("input"), list):
                return _error(400, f"line {n}: bad model or input")
            if not 0 < len(body["input"]) <= 2048 or "" in body["input"]:
                return _error(400, f"line {n}: 1 to 2048 non-empty inputs per request")
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = ("batch", content)
        return Reply(200, _file_object(file_id, len(content), "batch"))

    def _create(self, request: Request) -> Reply:
        body = request.body
        if body.get("endpoint") != "/v1/embeddings" or body.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/embeddings and completion_window 24h")
        stored = self.files.get(body.get("input_file_id"))
        if stored is None:
            return _error(400, "unknown input_file_id")
        requests = [json.loads(line) for line in stored[1].splitlines()]
        if sum(len(r["body"]["input"]) for r in requests) > 50_000:
            return _error(400, "more than 50,000 embedding inputs in one batch")
        job = FakeJob(
            id=f"batch_{len(self.jobs) + 1}",
            input_file_id=body["input_file_id"],
            metadata=body.get("metadata") or {},
            requests=requests,
        )
        self.jobs[job.id] = job
        self.created.set()
        return Reply(200, self._batch(job))

    def _cancel(self, job: FakeJob) -> Reply:
        if job.status in ("completed", "failed", "expired", "cancelled"):
            return _error(409, f"cannot cancel a batch with status {job.status}")
        job.status = "cancelling"
        return Reply(200, self._batch(job))

    def _advance(self, job: FakeJob) -> None:
        if self.instant and job.status in STEPS[:-1] and not self.hold:
            job.status = "finalizing"
        if job.status == "cancelling":
            self._finish(job, "cancelled", self.partial)
        elif job.status in STEPS[:-1] and not (self.hold and job.status == "in_progress"):
            nxt = STEPS[STEPS.index(job.status) + 1]
            if nxt == "completed":
                if self.expire:
                    self._finish(job, "expired", self.partial)
                else:
                    self._finish(job, "completed", len(job.requests))
            else:
                job.status = nxt

    def _finish(self, job: FakeJob, status: str, upto: int) -> None:
        out, err = [], []
        for i, req in enumerate(job.requests):
            cid = req["custom_id"]
            if i >= upto:
                if status == "expired":
                    err.append(
                        {
                            "id": f"batch_req_{i}",
                            "custom_id": cid,
                            "response": None,
                            "error": {
                                "code": "batch_expired",
                                "message": "This request could not be executed before the "
                                "completion window expired.",
                            },
                        }
                    )
                continue
            if cid in self.fail:
                err.append(
                    _line(
                        i,
                        cid,
                        400,
                        {
                            "error": {
                                "message": self.fail[cid],
                                "type": "invalid_request_error",
                                "param": None,
                                "code": None,
                            }
                        },
                    )
                )
                continue
            out.append(_line(i, cid, 200, self._embeddings(req["body"])))
        out.reverse()  # output order is not request order
        job.done, job.failed = len(out), len(err)
        if out:
            job.output_file_id = self._store_output(out)
        if err:
            job.error_file_id = self._store_output(err)
        job.status = status
        job.finished_at = int(time.time())

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        request = Request("POST", "/v1/embeddings", {}, body)
        vectors = [self.vector(t, request) for t in body["input"]]
        base64 = body.get("encoding_format") == "base64"
        tokens = sum(tokens_of(t) for t in body["input"])
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v, base64)}
                for i, v in enumerate(vectors)
            ],
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _store_output(self, lines: list[dict[str, Any]]) -> str:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = (
            "batch_output",
            b"".join(json.dumps(x).encode() + b"\n" for x in lines),
        )
        return file_id

    def _batch(self, job: FakeJob) -> dict[str, Any]:
        finished = job.status in ("completed", "failed", "expired", "cancelled")
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": "/v1/embeddings",
            "errors": None,
            "input_file_id": job.input_file_id,
            "completion_window": "24h",
            "status": job.status,
            "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id,
            "created_at": job.created_at,
            "in_progress_at": None,
            "expires_at": job.created_at + 86400,
            "finalizing_at": None,
            "completed_at": job.finished_at if job.status == "completed" else None,
            "failed_at": None,
            "expired_at": job.finished_at if job.status == "expired" else None,
            "cancelling_at": None,
            "cancelled_at": job.finished_at if job.status == "cancelled" else None,
            "request_counts": {
                "total": len(job.requests),
                "completed": job.done if finished else 0,
                "failed": job.failed if finished else 0,
            },
            "metadata": job.metadata,
        }


def _line(i: int, cid: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"batch_req_{i}",
        "custom_id": cid,
        "response": {"status_code": status, "request_id": f"req_{i}", "body": body},
        "error": None,
    }


def _file_object(file_id: str, size: int, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": f"{file_id}.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _error(status: int, message: str) -> Reply:
    return Reply(
        status,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


def _multipart(request: Request) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (the SDK's file upload)."""
    ctype = request.headers.get("content-type", "")
    boundary = ctype.split("boundary=")[-1].strip('"').encode()
    raw = request.body if isinstance(request.body, bytes) else b""
    fields: dict[str, bytes] = {}
    for part in raw.split(b"--" + boundary):
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep or b'name="' not in head:
            continue
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        fields[name] = value[:-2] if value.endswith(b"\r\n") else value
    return fields


def serve_batches() -> tuple[FakeBatchAPI, LoopbackServer]:
    fake = FakeBatchAPI()
    return fake, LoopbackServer(fake)


def main() -> None:
    """``python -m tests.batch.fake_batches [PORT]``: serve the fake until stopped (for the docs' run)."""
    import sys
    from http.server import ThreadingHTTPServer

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    server = LoopbackServer(FakeBatchAPI())
    server._server.server_close()
    server._server = ThreadingHTTPServer(("127.0.0.1", port), server._server.RequestHandlerClass)
    print(f"fake OpenAI Files/Batches API on http://127.0.0.1:{port}/v1", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
