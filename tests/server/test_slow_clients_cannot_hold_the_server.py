"""Slow and idle clients cannot hold the server: head, body and idle deadlines, an evicting cap.

All of it happens in the HTTP protocol, before the application and its API-key check see
a request: an attacker needs no key to try, and gets nothing for trying.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cachedembed.server.protocol import Limits
from cachedembed.stores import Store

from .conftest import API_KEY, build
from .harness import scripted_vector, serve_process, serving, wait_until_up

ATTACKERS = 1_000
HEAD_START = b"POST /v1/embeddings HTTP/1.1\r\nHost: victim\r\nX-Slow: "


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection (blocks until then)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


class Slowloris:
    """``ATTACKERS`` sockets sending a request head one byte every ``interval`` seconds.

    A socket the server closes is reopened at once, so the pressure never lets up.
    """

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._sockets = [self._open() for _ in range(ATTACKERS)]
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _open(self) -> socket.socket:
        sock = connect(self.url)
        sock.setblocking(False)
        sock.send(HEAD_START)
        return sock

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            for i, sock in enumerate(self._sockets):
                try:
                    sock.send(b"a")
                except OSError:  # evicted or timed out by the server
                    self.closed_by_server += 1
                    sock.close()
                    self._sockets[i] = self._open()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def many_open_files() -> Iterator[None]:
    """This test process holds a thousand sockets: allow it that many descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4 * ATTACKERS) if hard != resource.RLIM_INFINITY else 4 * ATTACKERS
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_a_thousand_trickling_sockets_do_not_lock_out_a_real_client(
    tmp_path: Path, many_open_files: None
) -> None:
    # Default limits, a key configured, and the common `ulimit -n` of 1,024 for the server.
    args = ["--model", "mine=scripted:m1", "--cache", f"sqlite:///{tmp_path / 'c.db'}"]
    env = {"CACHEDEMBED_SERVER_API_KEY": API_KEY}
    with serve_process(args, env, max_open_files=1024) as (proc, url):
        wait_until_up(url)
        attack = Slowloris(url, interval=2.0)
        try:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            # Through the header timeout (10 s): the slow heads are cut, reopened, cut again.
            deadline = time.monotonic() + 14
            served = 0
            while time.monotonic() < deadline:
                n = served
                response = requests.post(
                    f"{url}/v1/embeddings",
                    json={"model": "mine", "input": f"real client {n}", "encoding_format": "float"},
                    headers=headers,
                    timeout=10,
                )
                assert response.status_code == 200, response.text
                got = response.json()["data"][0]["embedding"]
                assert got == scripted_vector(f"real client {n}", "m1", 8).tolist()
                served += 1
                time.sleep(0.5)  # pacing of the real client, not synchronisation
            assert served >= 10
            # The server did cut the attackers (evictions and header timeouts), and lives.
            assert attack.closed_by_server >= ATTACKERS
            assert proc.poll() is None
        finally:
            attack.stop()


def test_a_request_head_trickled_past_the_header_timeout_is_cut(cache: Store) -> None:
    app, small, _ = build(cache, api_key=API_KEY)
    with serving(app, Limits(header_timeout=0.5)) as url:
        sock = connect(url)
        sock.sendall(HEAD_START)
        started = time.monotonic()
        with sock:
            sock.settimeout(0.1)
            while True:  # keep trickling until the server hangs up
                try:
                    sock.sendall(b"a")
                    if sock.recv(1) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
        assert time.monotonic() - started < 10
        assert requests.get(f"{url}/healthz").ok
    assert small.sent == []


def test_a_body_trickled_past_the_body_timeout_gets_408(cache: Store) -> None:
    app, small, _ = build(cache)
    with serving(app, Limits(body_timeout=0.5)) as url, connect(url) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert small.sent == []


def test_a_connection_that_never_sends_a_byte_is_closed_after_the_keep_alive_timeout(
    cache: Store,
) -> None:
    app, _, _ = build(cache)
    with serving(app, Limits(keep_alive_timeout=0.5)) as url, connect(url) as sock:
        assert closed_by_server(sock) == b""


def test_beyond_the_connection_cap_the_oldest_waiting_connection_makes_room(cache: Store) -> None:
    app, small, _ = build(cache)
    with serving(app, Limits(max_connections=4)) as url:
        idle = [connect(url) for _ in range(4)]
        for sock in idle:
            sock.sendall(HEAD_START)  # each is still sending its head: evictable
        response = requests.post(f"{url}/v1/embeddings", json={"model": "small", "input": "x"})
        assert response.status_code == 200
        assert closed_by_server(idle[0]) == b""  # the oldest one made room
        for sock in idle:
            sock.close()
    assert small.sent == ["x"]
