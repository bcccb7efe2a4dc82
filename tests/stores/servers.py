"""Throwaway databases on the PostgreSQL, MariaDB and Redis servers the shared-cache tests run against.

Each database (on Redis: each key prefix) gets a unique name and is dropped afterwards, so
concurrent test runs never meet. A server that cannot be reached is an error, never a
skip: CI has all three running (``.ci/services`` starts them).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_HOST = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
REDIS = "redis://127.0.0.1:6379/0"


def unique_name(prefix: str = "ce") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _create_postgres() -> str:
    import psycopg

    name = unique_name()
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _create_mariadb() -> str:
    import pymysql

    name = unique_name()
    with pymysql.connect(**MYSQL_HOST, connect_timeout=10, autocommit=True) as admin:
        admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return f"mysql+pymysql://root@127.0.0.1:3306/{name}"


def _drop_mariadb(url: str) -> None:
    import pymysql

    with pymysql.connect(**MYSQL_HOST, connect_timeout=10, autocommit=True) as admin:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`")


class _DatabasePool:
    """Fresh databases, each created while the test before runs and dropped while the next
    one runs: one thread of the pool does both, so no test waits 0.2-0.8 s for either.

    Every database still serves one test only; :func:`close_pools` (at the end of the
    session, tests/conftest.py) drops the one made ahead and waits for the drops.
    """

    def __init__(self, create: Callable[[], str], drop: Callable[[str], None]) -> None:
        self._create, self._drop = create, drop
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        self._ahead: Future[str] | None = None
        self._lock = threading.Lock()

    @contextmanager
    def database(self) -> Iterator[str]:
        with self._lock:
            ahead = self._ahead or self._worker.submit(self._create)
            self._ahead = self._worker.submit(self._create)
        url = ahead.result()
        try:
            yield url
        finally:
            from cachedembed.stores import close_all

            close_all()  # closing flushes buffered counters: into the database, not after it
            self._worker.submit(self._drop, url)

    def close(self) -> None:
        with self._lock:
            ahead, self._ahead = self._ahead, None
        if ahead is not None:
            self._worker.submit(self._drop, ahead.result())
        self._worker.shutdown(wait=True)


_POOLS: dict[str, _DatabasePool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(kind: str) -> _DatabasePool:
    makers = {
        "postgresql": (_create_postgres, _drop_postgres),
        "mariadb": (_create_mariadb, _drop_mariadb),
    }
    with _POOLS_LOCK:
        if kind not in _POOLS:
            _POOLS[kind] = _DatabasePool(*makers[kind])
        return _POOLS[kind]


def close_pools() -> None:
    """Drop the databases made ahead and wait until every used one is dropped."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own; yields its ``postgresql+psycopg://`` URL."""
    with _pool("postgresql").database() as url:
        yield url


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh MariaDB/MySQL database of this test's own; yields its ``mysql+pymysql://`` URL."""
    with _pool("mariadb").database() as url:
        yield url


def delete_redis_prefix(prefix: str, server: str = REDIS) -> None:
    """Remove every key under ``prefix`` (SCAN + DEL: never FLUSHDB on a shared server)."""
    import redis

    client = redis.Redis.from_url(server, socket_connect_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@contextmanager
def redis_prefix(server: str = REDIS) -> Iterator[str]:
    """A cache URL on ``server`` under a fresh key prefix, whose keys are deleted afterwards.

    Shared stores are closed before the keys go: closing flushes buffered counters, which
    would otherwise land after the cleanup.
    """
    from cachedembed.stores import close_all

    prefix = unique_name("test")
    try:
        yield f"{server}?prefix={prefix}"
    finally:
        close_all()
        delete_redis_prefix(prefix, server)


@contextmanager
def server_database(kind: str) -> Iterator[str]:
    """``kind`` is ``"postgresql"``, ``"mariadb"`` or ``"redis"``."""
    factory = {"postgresql": postgres_database, "mariadb": mariadb_database, "redis": redis_prefix}[
        kind
    ]
    with factory() as url:
        yield url


def free_port() -> int:
    """A free port below 55536, so a cluster node's bus port (port + 10000) exists too."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 55536:
            return port


class OwnRedis:
    """A redis-server of the test's own, on a free port, with no persistence.

    Started in the foreground and declared ready when it logs so (no polling); stopped by
    its own pid only. ``restart()`` starts a fresh, empty server on the same port: what
    a production Redis without AOF looks like after a restart.
    """

    def __init__(self, directory: str, *args: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.args = args
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                *self.args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "Ready to accept connections" in line:
                # Keep draining its log, so a full pipe never blocks the server.
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def own_redis(directory: str, *args: str) -> Iterator[OwnRedis]:
    server = OwnRedis(directory, *args)
    server.start()
    try:
        yield server
    finally:
        from cachedembed.stores import close_all

        close_all()
        server.stop()


class OwnPostgres:
    """A PostgreSQL cluster of the test's own: ``initdb`` in a temporary folder, on a free port.

    Run as the ``postgres`` user when the tests run as root (``initdb`` refuses root), in
    a folder that user owns. Stopped and started with ``pg_ctl`` like an operator would.
    """

    def __init__(self) -> None:
        import getpass
        import glob
        import shutil
        import tempfile
        from pathlib import Path

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        found = shutil.which("pg_ctl")
        self.bin = Path(bins[-1]) if bins else Path(found).parent if found else None
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        self.root = Path(tempfile.mkdtemp(prefix="cachedembed-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if getpass.getuser() == "root" else []
        if self._as:
            shutil.chown(self.root, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run(
            [*self._as, str(self.bin / tool), *args], check=True, capture_output=True, timeout=60
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` (the default) ends it like a crash, without a word to clients."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def terminate_clients(self) -> int:
        """End every other session (``pg_terminate_backend``); how many were ended."""
        import psycopg

        with psycopg.connect(self.url.replace("+psycopg", ""), autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        return len(rows)

    def remove(self) -> None:
        import shutil

        with suppress(Exception):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        from cachedembed.stores import close_all

        close_all()
        server.remove()
