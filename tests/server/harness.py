"""What the server tests share: a deterministic in-process provider and a real uvicorn on loopback.

``ScriptedProvider`` is a real :class:`ProviderEmbeddingFunction` (so ``Cached`` treats it
exactly as it treats OpenAI or TEI): it embeds each text to a fixed pseudo-random vector,
reports provider tokens per batch, records every text it was sent, and can be told to fail
its next calls with a given :class:`ProviderError`. Importing this module registers it as
provider ``scripted``, so ``--model scripted:NAME`` works in a ``cachedembed serve``
subprocess that imports it first.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import requests
import uvicorn
import xxhash
from starlette.types import ASGIApp

from cachedembed.embedding_functions import EmbeddedBatch, ProviderEmbeddingFunction
from cachedembed.keys import Role
from cachedembed.server.protocol import Limits, uvicorn_config


def scripted_vector(text: str, model: str, dim: int) -> np.ndarray:
    """The vector ``ScriptedProvider(model, dim)`` returns for ``text`` (full float32 bit patterns)."""
    seed = xxhash.xxh64_intdigest(f"{model}\x00{text}".encode("utf-8", "surrogatepass"))
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def scripted_tokens(text: str) -> int:
    """The tokens the provider bills for one text: its words, plus one."""
    return len(text.split()) + 1


class ScriptedProvider(ProviderEmbeddingFunction):
    """Deterministic vectors, exact token reports, batches of ``batch_size``, scripted failures."""

    provider = "scripted"

    def __init__(
        self, model_name: str = "scripted-1", dimensions: int = 8, batch_size: int = 16
    ) -> None:
        self.model_name = model_name
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.sent: list[str] = []
        self.failures: list[Exception] = []
        self.delay = 0.0
        self.api_key: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, value: str) -> ScriptedProvider:
        name, _, dims = value.partition("@")
        return cls(name or "scripted-1", int(dims) if dims else 8)

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            with self._lock:
                failure = self.failures.pop(0) if self.failures else None
                if failure is None:
                    self.sent.extend(chunk)
            if failure is not None:
                raise failure
            if self.delay:
                time.sleep(self.delay)
            vectors = np.stack(
                [scripted_vector(t, self.model_name, self.dimensions) for t in chunk]
            )
            yield EmbeddedBatch(start, vectors, sum(scripted_tokens(t) for t in chunk))

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model_name, "dimensions": self.dimensions}

    def get_config(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "dimensions": self.dimensions,
            "batch_size": self.batch_size,
        }


@contextmanager
def serving(app: ASGIApp, limits: Limits | None = None) -> Iterator[str]:
    """Run ``app`` as ``cachedembed serve`` does (uvicorn, the server's connection limits) on
    127.0.0.1 (an ephemeral port) in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, limits or Limits(), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve_process(
    args: Sequence[str], env: dict[str, str] | None = None, max_open_files: int | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``cachedembed serve ARGS --port 0`` (the scripted provider registered) in a subprocess.

    Yields the process and its base URL once its first line announced it. ``max_open_files``
    sets the child's ``RLIMIT_NOFILE`` (soft and hard) before it starts.
    """
    code = "import tests.server.harness; from cachedembed.cli import main; main()"

    def limit_files() -> None:
        if max_open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))

    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", *args, "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=limit_files,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
        assert match, line + proc.stdout.read()
        # Drain the log so a chatty server never blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield proc, match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def wait_until_up(url: str) -> None:
    """Return once ``url``'s health probe answers (uvicorn starts listening after the banner)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.05)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory (``VmHWM`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")
