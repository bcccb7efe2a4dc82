"""Memory is bounded: oversized bodies are refused before they are buffered or parsed, and
however many clients upload at once, the server holds at most --max-body-memory of bodies."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cachedembed.stores import Store

from .conftest import Served
from .harness import peak_rss_bytes, serve_process, wait_until_up

MiB = 1024 * 1024
LIMIT = 16 * MiB  # the default --max-body-bytes


def padded(prefix: str, item: str, suffix: str, size: int) -> bytes:
    """``prefix item,item,...,item suffix`` of exactly ``size`` bytes (a trailing space pads)."""
    count = (size - len(prefix) - len(suffix) + 1) // (len(item) + 1)
    body = (prefix + ",".join([item] * count) + suffix).encode()
    return body + b" " * (size - len(body))


def chunks_of(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """A streamed (chunked, no Content-Length) upload of ``body``."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.slow
def test_forty_concurrent_16_mib_bodies_keep_the_server_under_1_5_gb(tmp_path: Path) -> None:
    # 2,047 texts of 8 KiB: just under --max-inputs.
    texts = padded('{"model": "mine", "input": [', json.dumps("x" * 8190), "]}", LIMIT)
    # The shapes that cost json.loads most per byte: empty lists and floats.
    lists = padded('{"model": "mine", "input": [', "[]", "]}", LIMIT)
    floats = padded('{"model": "mine", "input": [', "1.5", "]}", LIMIT)
    oversized = texts[:-2] + b" " * MiB + b"]}"
    uploads: list[tuple[str, bytes | Iterator[bytes], int]] = []
    for _ in range(10):
        uploads += [
            ("texts", texts, 200),
            ("lists", lists, 400),
            ("floats", floats, 400),
            ("streamed, over the limit", chunks_of(oversized), 413),
        ]
    args = ["--model", "mine=scripted:m1", "--cache", f"sqlite:///{tmp_path / 'c.db'}"]
    with serve_process(args) as (proc, url):
        wait_until_up(url)
        statuses: dict[int, tuple[str, int]] = {}
        start = threading.Barrier(len(uploads))

        def upload(n: int, kind: str, body: bytes | Iterator[bytes]) -> None:
            start.wait()
            try:
                response = requests.post(
                    f"{url}/v1/embeddings",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                )
                statuses[n] = (kind, response.status_code)
            except requests.ConnectionError:
                statuses[n] = (kind, -1)  # cut off after its 413: acceptable only there

        threads = [
            threading.Thread(target=upload, args=(n, kind, body))
            for n, (kind, body, _) in enumerate(uploads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = peak_rss_bytes(proc.pid)
    for n, (kind, _, expected) in enumerate(uploads):
        allowed = {expected, -1} if expected == 413 else {expected}
        assert statuses[n][1] in allowed, (kind, statuses[n])
    assert peak < 1.5 * 1024 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read(
    served: Served,
) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % (LIMIT + 1)
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server answers and closes: not a byte more read
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_streamed_body_is_cut_at_the_limit(served: Served, cache: Store) -> None:
    body = b'{"model": "small", "input": "' + b"x" * (LIMIT + 10) + b'"}'
    response = requests.post(
        f"{served.url}/embed", data=chunks_of(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert served.small.sent == []
