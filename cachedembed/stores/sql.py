"""The SQLAlchemy store: SQLite (the embedded default), PostgreSQL and MySQL/MariaDB.

SQLAlchemy builds the engine, parses URLs and runs the Alembic migrations; the hot
paths (lookups, inserts, counter merges) then talk to the DB-API cursor directly with
one statement per batch, because per-row ORM or Core objects would dominate a warm hit.

SQLite runs in WAL mode with a busy timeout, writes take ``BEGIN IMMEDIATE`` so two
writers never deadlock on a lock upgrade, and a write that still finds the database
locked is retried: "database is locked" never reaches the caller.

PostgreSQL and MySQL/MariaDB connections run in autocommit mode with explicit
``BEGIN``/``COMMIT`` around writes, so reads always see other writers' latest commits.
Rows are written in id order and a transaction the server aborts as a deadlock (or that
finds its connection gone before anything was sent) is replayed whole: many workers
inserting overlapping entries never see an error.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ..errors import ConfigurationError, StoreError
from ..keys import NamespaceSpec
from ..redact import REDACTED
from ..usage import UsageDelta
from . import _sqltext, migrate
from .base import (
    CONNECT_TIMEOUT,
    EntryBatch,
    ExportedEntry,
    FileIdentity,
    Namespace,
    NamespaceUsage,
    PendingStats,
    Row,
    Store,
    check_still_there,
    failure,
    text_problem,
)
from .leases import LeaseSql
from .outage import SERVER_WAITS, Outage
from .urls import PASSWORD_PARAMS, no_cache_error, redact_url, url_passwords

_STATS_COLUMNS = UsageDelta.columns()
_ENTRY_COLUMNS = "id, ns, chk, tokens, flags, used, created, vec, text"
_HIT_COLUMNS = "id, ns, chk, tokens, flags, used, vec"

# SQLite page size for new caches. Entries arrive in random id order, so B-tree pages
# split and stay partly empty; bigger pages hold more rows and lose less to that. Measured
# on 20,000 384-d float32 entries written in 2,048-row batches (bytes per entry, raw
# vector 1,536 B): 4 KiB pages 2,225; 16 KiB 1,821; 64 KiB 1,760 - and lookups are no
# slower (bench/run.py).
SQLITE_PAGE_SIZE = 65536

_T = TypeVar("_T")

# Server error codes meaning "the transaction was rolled back, run it again":
# PostgreSQL SQLSTATEs (deadlock, serialization failure) and MySQL error numbers
# (deadlock, lock wait timeout).
_PG_RETRY = frozenset({"40P01", "40001"})
_MYSQL_RETRY = frozenset({1213, 1205})


def _closed(driver_connection: Any) -> bool:
    """Whether a DB-API connection knows its server session is over (psycopg, PyMySQL)."""
    return bool(
        getattr(driver_connection, "closed", False)
        or getattr(driver_connection, "broken", False)
        or getattr(driver_connection, "open", True) is False
    )


class _Dialect:
    """The few SQL differences between the supported databases, in one place."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sqlite = name == "sqlite"
        self.mysql = name in ("mysql", "mariadb")
        self.postgres = name == "postgresql"
        if not (self.sqlite or self.mysql or self.postgres):
            raise StoreError(f"unsupported database {name!r}: use sqlite, postgresql or mysql")
        self.param = "?" if self.sqlite else "%s"
        self.begin = "BEGIN IMMEDIATE" if self.sqlite else "BEGIN"
        # SQLite allows 32766 bound variables; PyMySQL inlines parameters client-side, so
        # a MySQL IN list is bounded only by max_allowed_packet (16 MiB by default; 50k
        # ids take under 1.2 MB) and a 20k-text lookup stays one statement.
        self.max_params = 30000 if self.sqlite else 50000 if self.mysql else 10000
        self.length = "octet_length" if self.postgres else "length"
        cols = ", ".join(_STATS_COLUMNS)
        marks = ", ".join([self.param] * (len(_STATS_COLUMNS) + 2))
        if self.mysql:
            self.insert_entries = (
                f"INSERT IGNORE INTO entries ({_ENTRY_COLUMNS}) VALUES ({self.marks(9)})"
            )
            updates = ", ".join(f"{c} = {c} + VALUES({c})" for c in _STATS_COLUMNS)
            self.merge_stats = f"INSERT INTO stats (ns, day, {cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {updates}"
            self.insert_namespace = (
                "INSERT IGNORE INTO namespaces (`key`, spec, provider, model, role, dtype, created) "
                f"VALUES ({self.marks(7)})"
            )
        else:
            self.insert_entries = f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES ({self.marks(9)}) ON CONFLICT (id) DO NOTHING"
            updates = ", ".join(f"{c} = stats.{c} + excluded.{c}" for c in _STATS_COLUMNS)
            self.merge_stats = f"INSERT INTO stats (ns, day, {cols}) VALUES ({marks}) ON CONFLICT (ns, day) DO UPDATE SET {updates}"
            self.insert_namespace = (
                "INSERT INTO namespaces (key, spec, provider, model, role, dtype, created) "
                f"VALUES ({self.marks(7)}) ON CONFLICT (key) DO NOTHING"
            )
        self.key_column = "`key`" if self.mysql else "key"
        # PostgreSQL takes the whole lookup as one array parameter: one statement text
        # for every batch size, so psycopg prepares it once per connection. The cast
        # keeps the comparison on the bigint primary-key index.
        self.select_any = f"SELECT {_HIT_COLUMNS} FROM entries WHERE id = ANY(%s::bigint[])"
        self.select_one = self.q(f"SELECT {_HIT_COLUMNS} FROM entries WHERE id = ?")

    def marks(self, n: int) -> str:
        return ", ".join([self.param] * n)

    def q(self, sql: str) -> str:
        """Write SQL with ``?`` placeholders once; this adapts them to the driver."""
        return sql if self.sqlite else sql.replace("?", "%s")


# Widths of the namespaces table's display columns (migration 0001). The full identity
# lives in `spec` (TEXT); these only label rows for people reading the database.
_PROVIDER_WIDTH = 100
_MODEL_WIDTH = 255


def _fit(label: str, width: int) -> str:
    """``label`` cut to ``width`` characters, the same on every backend.

    SQLite ignores declared lengths, PostgreSQL refuses longer values and MySQL truncates
    or refuses by sql_mode: a long name must behave alike everywhere. A cut label ends with
    a hash of the whole, so two long names sharing a prefix stay distinguishable.
    """
    if len(label) <= width:
        return label
    import xxhash

    digest = xxhash.xxh3_64_hexdigest(label.encode("utf-8", "surrogatepass"))
    return f"{label[: width - 17]}~{digest}"


def _sqlite_path(url: sa.URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def _prepare_sqlite_file(path: Path) -> None:
    """Create the cache file's folder and the file itself readable by the user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # SQLite gives the -wal and -shm files the permissions of the main file.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _read_only_uri(path: Path) -> str | None:
    """A read-only ``file:`` URI for a cache file this process cannot write; ``None`` if it can.

    A WAL-mode file needs its ``-shm`` file: in a folder nobody can write and with no
    ``-wal`` file (so no writer has it open), the file is opened as immutable, without
    one. Entries are write-once, so even a writer appearing later can only make this
    reader miss, never serve a wrong vector (every row's check and length are verified).
    """
    folder_writable = os.access(path.parent, os.W_OK)
    if not path.exists() or (os.access(path, os.W_OK) and folder_writable):
        return None
    immutable = not folder_writable and not Path(f"{path}-wal").exists()
    return f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Autocommit at the driver level: transactions are opened explicitly (BEGIN IMMEDIATE).
    dbapi_conn.isolation_level = None
    # A damaged TEXT value (invalid UTF-8) must reach verify as a damaged entry, not make
    # every read of its page raise: undecodable bytes come back as lone surrogates.
    dbapi_conn.text_factory = _lenient_text
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")  # only takes effect on a new file
    cur.execute("PRAGMA journal_mode = WAL")  # a no-op on a read-only cache (already WAL)
    # NORMAL in WAL mode is durable against process crashes (the cache's threat model);
    # an OS crash may lose the last transactions but never corrupts the file.
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA cache_size = -65536")
    cur.close()


def _silence_socket(dbapi_conn: Any) -> None:
    """Redirect a forked copy of a client socket to /dev/null, leaving the parent's intact."""
    sock = getattr(dbapi_conn, "_sock", None)  # PyMySQL
    fileno = getattr(sock if sock is not None else dbapi_conn, "fileno", None)  # psycopg
    if fileno is None:
        return  # SQLite: no socket
    with suppress(Exception):
        fd = fileno()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, fd)
        os.close(devnull)


def _exported(
    i: int, check: int, tokens: int, flags: int, used: int, created: int, vec: Any, text: Any
) -> ExportedEntry:
    """An entry as read back; a text that is not valid text marks it damaged (and is dropped)."""
    problem = text_problem(text)
    if isinstance(vec, (bytes, bytearray, memoryview)):
        vec = bytes(vec)
    else:
        vec, problem = b"", problem or f"its stored vector is {type(vec).__name__}, not bytes"
    return ExportedEntry(
        id=i,
        check=check,
        tokens=tokens,
        flags=flags,
        used=used,
        created=created,
        vec=vec,
        text=None if problem else text,
        problem=problem,
    )


def _move_secret_params(sa_url: sa.URL, options: dict[str, Any]) -> tuple[sa.URL, dict[str, Any]]:
    """A ``?password=`` goes to the driver as an argument, not in the engine's URL.

    The engine's repr (in logs, in tracebacks) masks only the userinfo password.
    """
    secret_params = {k: v for k, v in sa_url.query.items() if k.lower() in PASSWORD_PARAMS}
    if not secret_params:
        return sa_url, options
    connect_args = {**options.get("connect_args", {}), **secret_params}
    return sa_url.difference_update_query(secret_params), {**options, "connect_args": connect_args}


def _begin_immediate(conn: sa.Connection) -> None:
    """SQLite transactions take the write lock up front; autocommit reads (the schema check) take none."""
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class SqlStore(Store):
    """A cache in a SQL database reached through a SQLAlchemy URL."""

    _connections: list[tuple[threading.Thread, Any]]
    """(owning thread, connection) for every connection this process opened."""
    _connections_lock: threading.Lock
    _inherited: list[Any]
    """A forked parent's connections: never used, closed or garbage collected here."""

    def __init__(self, url: str, *, upgrade: bool | None = True, create: bool = True) -> None:
        super().__init__()

        self.url = redact_url(url)
        self._passwords = url_passwords(url)
        sa_url = self._parse_url(url)
        self._d = _Dialect(sa_url.get_backend_name())
        self._leases = LeaseSql(self._d.name, self._d.max_params)
        self._create = create
        self._path: Path | None = None
        self.read_only = False
        """A SQLite file this process cannot write: hits are served, nothing is stored."""
        options = (self._sqlite_options if self._d.sqlite else self._server_options)(sa_url)
        self._engine = self._create_engine(*_move_secret_params(sa_url, options))
        self._db_errors: tuple[type[BaseException], ...] = (
            self._engine.dialect.loaded_dbapi.Error,
        )
        self._local = threading.local()
        self._open_schema(upgrade)
        self._opened = FileIdentity.of(self._path) if self._path is not None else None

    def _parse_url(self, url: str) -> sa.URL:
        try:
            return make_url(url)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot parse the cache URL {self.url} ({self._scrub(str(exc))}): "
                "write DIALECT+DRIVER://USER@HOST[:PORT]/DATABASE"
            ) from None

    def _sqlite_options(self, sa_url: sa.URL) -> dict[str, Any]:
        """Engine options for a SQLite file: read-only when this process cannot write it."""
        self._path = _sqlite_path(sa_url)
        if self._path is not None and not self._create and not self._path.is_file():
            raise no_cache_error(str(self._path))
        connect_args: dict[str, Any] = {"timeout": 30, "check_same_thread": False}
        options: dict[str, Any] = {"connect_args": connect_args}
        uri = _read_only_uri(self._path) if self._path is not None else None
        if uri is not None:
            self.read_only = True
            options["creator"] = partial(sqlite3.connect, uri, uri=True, **connect_args)
        elif self._path is not None:
            try:
                _prepare_sqlite_file(self._path)
            except OSError as exc:
                raise failure(self.url, f"cannot create {self._path} ({exc.strerror})") from None
        return options

    def _server_options(self, sa_url: sa.URL) -> dict[str, Any]:
        """Engine options for PostgreSQL or MySQL, and the outage tracker of the server.

        A server that is down must cost a call seconds, not the OS's minutes-long connect
        timeout (a ?connect_timeout= in the URL wins); once it failed, it is skipped for a
        while rather than dialled on every call.
        """
        connect_args: dict[str, Any] = {"charset": "utf8mb4"} if self._d.mysql else {}
        if "connect_timeout" not in sa_url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
        self.outage_waits = SERVER_WAITS
        self.outage = Outage(*SERVER_WAITS)
        return {"connect_args": connect_args}

    def _create_engine(self, sa_url: sa.URL, options: dict[str, Any]) -> sa.Engine:
        try:
            engine = sa.create_engine(sa_url, poolclass=NullPool, **options)
        except (
            ModuleNotFoundError
        ) as exc:  # a dialect without a driver: postgresql:// needs psycopg2
            raise StoreError(
                f"cannot open cache {self.url}: {exc}; install that driver or name an installed one "
                "(postgresql+psycopg://, mysql+pymysql://)"
            ) from None
        except Exception as exc:  # unknown driver, bad URL
            raise StoreError(f"cannot open cache {self.url}: {self._scrub(str(exc))}") from None
        if self._d.sqlite:
            sa.event.listen(engine, "connect", _on_sqlite_connect)
            sa.event.listen(engine, "begin", _begin_immediate)
        return engine

    # -- connections --------------------------------------------------------

    def _raw(self) -> Any:
        """This thread's DB-API connection, in autocommit mode (one per thread and process).

        A forked child never uses (or closes) its parent's connections: the socket is
        shared with the parent, and a close from the child would end the parent's session.
        Connections of threads that have ended are closed when the next one opens, so a
        thread-per-task application does not pile up server sessions.
        """
        local = self._local
        conn = getattr(local, "conn", None)
        pid = os.getpid()
        if (
            conn is not None
            and not self._d.sqlite
            and local.pid == pid
            and _closed(conn.driver_connection)
        ):
            # The server ended the session (a restart, pg_terminate_backend) and the driver
            # noticed: dial again instead of failing with "the connection is closed".
            self._drop_connection()
            conn = None
        if conn is None or local.pid != pid:
            try:
                conn = self._engine.raw_connection()
                if not self._d.sqlite:
                    self._prepare_server_connection(conn.driver_connection)
            except Exception as exc:
                raise self._store_error(exc) from None
            local.conn = conn
            local.pid = pid
            with self._connections_lock:
                ended = [c for t, c in self._connections if not t.is_alive()]
                self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
                self._connections.append((threading.current_thread(), conn))
            for old in ended:
                with suppress(Exception):
                    old.close()
        return conn

    def _reset_process_state(self) -> None:
        super()._reset_process_state()
        # The parent's connections share their sockets (or SQLite file locks) with the
        # parent: closing one here, or even letting it be garbage collected (the pool's
        # reset sends a ROLLBACK, libpq's finaliser a Terminate), would end or corrupt
        # the parent's session. Point their sockets at /dev/null and keep them forever.
        inherited: list[tuple[threading.Thread, Any]] = getattr(self, "_connections", [])
        self._inherited = [*getattr(self, "_inherited", []), *(c for _t, c in inherited)]
        for _thread, conn in inherited:
            _silence_socket(conn.driver_connection)
        self._connections = []
        self._connections_lock = threading.Lock()

    def _prepare_server_connection(self, dbapi_conn: Any) -> None:
        # The dialect knows each driver's spelling: psycopg's `autocommit` attribute,
        # PyMySQL's `autocommit()` method (assigning the attribute would silently leave
        # the session in a never-committed REPEATABLE READ snapshot).
        self._engine.dialect.set_isolation_level(dbapi_conn, "AUTOCOMMIT")
        if self._d.mysql:
            # Fewer gap locks between writers inserting neighbouring ids.
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.close()

    def _drop_connection(self) -> None:
        """Forget this thread's connection (after the server closed it)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._connections_lock:
            self._connections = [(t, c) for t, c in self._connections if c is not conn]
        with suppress(Exception):
            conn.invalidate()

    def _is_disconnect(self, exc: BaseException) -> bool:
        if self._d.sqlite or not isinstance(exc, self._db_errors):
            return False
        # SQLSTATE class 08 (connection exception) and 57P0x (server shutting down or
        # the session terminated by an administrator) both mean "this socket is done".
        state = getattr(exc, "sqlstate", None) or ""
        if state.startswith(("08", "57P0")):
            return True
        # A server gone without a word ("server closed the connection unexpectedly") has
        # no SQLSTATE: the driver's connection then says it is closed or broken.
        conn = getattr(self._local, "conn", None)
        driver = conn.driver_connection if conn is not None else None
        if driver is not None and _closed(driver):
            return True
        return bool(self._engine.dialect.is_disconnect(exc, driver, None))  # type: ignore[arg-type]

    def _must_retry(self, exc: BaseException) -> bool:
        """Whether the server rolled the whole transaction back and it can simply run again."""
        if self._d.sqlite:
            return isinstance(exc, sqlite3.OperationalError) and (
                "locked" in str(exc) or "busy" in str(exc)
            )
        if self._d.postgres:
            return getattr(exc, "sqlstate", None) in _PG_RETRY
        args: tuple[Any, ...] = exc.args
        return bool(args) and args[0] in _MYSQL_RETRY

    def _store_error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
            # Opening and migrating go through SQLAlchemy, which wraps the driver's error:
            # unwrap it so a damaged file gets the remedy below, not "(sqlite3.DatabaseError) ...".
            exc = exc.orig
        text = self._scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if (
            self._d.sqlite
            and isinstance(exc, sqlite3.DatabaseError)
            and ("not a database" in text or "malformed" in text or "disk image" in text)
        ):
            return StoreError(
                f"the cache file {self._path} is damaged or is not a cachedembed cache ({text}). "
                "Remedy: move the file aside (or delete it) and a fresh cache will be created; "
                "`cachedembed export` can salvage a readable one first."
            )
        return failure(self.url, text)

    def _scrub(self, text: str) -> str:
        """``text`` with every password of this store's URL masked (drivers may echo them)."""
        for password in self._passwords:
            # Only where it stands alone: a password "p" must not turn "port" into "***ort".
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(password)}(?![A-Za-z0-9])", REDACTED, text)
        return text

    def _write(self, body: Callable[[Any], _T]) -> _T:
        """Run ``body(cursor)`` in one write transaction, replaying it while the server says so.

        Replays happen only when nothing was committed: a lock wait that never got the
        lock, a deadlock victim (rolled back by the server), or a connection found dead
        at ``BEGIN``. A connection lost later is reported, not replayed: the COMMIT may
        have landed, and replaying would count the same stats twice.
        """
        if self._path is not None:
            check_still_there(self._path, self._opened, self.url)
        if self.read_only:
            raise failure(self.url, f"{self._path} is read-only for this process")
        bulk = getattr(self._local, "bulk", None)
        if bulk is not None:  # inside bulk(): join its transaction, which commits or rolls back
            return body(bulk)
        delay = 0.05
        reconnected = False
        for _attempt in range(40):
            conn = self._raw()
            cur: Any = None
            try:
                cur = conn.cursor()
                cur.execute(self._d.begin)
            except Exception as exc:
                if cur is not None:
                    cur.close()
                if self._must_retry(exc):
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 1.0)
                    continue
                if not reconnected and self._is_disconnect(exc):
                    reconnected = True
                    self._drop_connection()
                    continue
                raise self._store_error(exc) from None
            try:
                result = body(cur)
                cur.execute("COMMIT")
                return result
            except BaseException as exc:
                with suppress(Exception):
                    cur.execute("ROLLBACK")
                if isinstance(exc, Exception) and self._must_retry(exc):
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 1.0)
                    continue
                if self._is_disconnect(exc):
                    self._drop_connection()
                if isinstance(exc, self._db_errors):
                    raise self._store_error(exc) from None
                raise
            finally:
                cur.close()
        raise StoreError(f"cache {self.url} stayed locked by other writers for too long")

    @contextmanager
    def bulk(self) -> Iterator[None]:
        if getattr(self._local, "bulk", None) is not None:
            yield  # already inside one
            return
        cur = self._raw().cursor()
        try:
            cur.execute(self._d.begin)
        except Exception as exc:
            cur.close()
            raise self._store_error(exc) from None
        self._local.bulk = cur
        try:
            yield
            cur.execute("COMMIT")
        except BaseException as exc:
            with suppress(Exception):
                cur.execute("ROLLBACK")
            self._forget_namespaces()
            if isinstance(exc, self._db_errors):
                raise self._store_error(exc) from None
            raise
        finally:
            self._local.bulk = None
            cur.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        def fetch(cur: Any) -> list[Any]:
            cur.execute(self._d.q(sql), params)
            return list(cur.fetchall())

        return self._query(fetch)

    def _query(self, body: Callable[[Any], _T], *, binary: bool = False) -> _T:
        """Run a read on this thread's connection, reconnecting once if the server went away.

        ``binary`` asks psycopg for binary results: bytea then arrives as raw bytes
        instead of hex text twice its size, which halves a warm lookup's time.
        """
        for attempt in (0, 1):
            conn = self._raw()
            try:
                cur = conn.cursor(binary=True) if binary and self._d.postgres else conn.cursor()
            except self._db_errors as exc:
                self._drop_connection()
                if attempt == 0:
                    continue
                raise self._store_error(exc) from None
            try:
                return body(cur)
            except self._db_errors as exc:
                if attempt == 0 and self._is_disconnect(exc):
                    self._drop_connection()
                    continue
                raise self._store_error(exc) from None
            finally:
                cur.close()
        raise AssertionError("unreachable")

    # -- schema -------------------------------------------------------------

    def _open_schema(self, upgrade: bool | None) -> None:
        if upgrade is None:  # `cachedembed migrate` opens as-is, to report and upgrade explicitly
            return
        try:
            revision = self.schema_revision()
        except Exception as exc:
            raise self._store_error(exc) from None
        if revision is None and not self._create:
            raise no_cache_error(f"{self.url} (the database has no cachedembed tables)")
        if revision != migrate.HEAD:
            if not upgrade:
                raise StoreError(
                    f"cache {self.url} has schema revision {revision}, this cachedembed needs "
                    f"{migrate.HEAD}: run `cachedembed migrate --cache URL`"
                )
            try:
                migrate.upgrade(self._engine)
            except Exception as exc:
                raise self._store_error(exc) from None

    def schema_revision(self) -> str | None:
        # Autocommit: reading the revision must not need a write lock (a read-only cache
        # file, or another process in the middle of a write).
        with self._engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return migrate.current_revision(conn)

    def upgrade(self) -> None:
        migrate.upgrade(self._engine)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._d.name

    # -- namespaces ---------------------------------------------------------

    def _get_or_create_namespace(self, spec: NamespaceSpec) -> Namespace:
        key = spec.key
        select = f"SELECT id, dim, created FROM namespaces WHERE {self._d.key_column} = ?"
        rows = self._read(select, (key,))
        if not rows:
            values = (
                key,
                spec.canonical,
                _fit(spec.provider, _PROVIDER_WIDTH),
                _fit(spec.model, _MODEL_WIDTH),
                spec.role,
                spec.dtype,
                int(time.time()),
            )
            self._write(lambda cur: cur.execute(self._d.insert_namespace, values))
            rows = self._read(select, (key,))
        ns_id, dim, created = rows[0]
        return Namespace(id=int(ns_id), key=key, spec=spec, dim=dim, created=int(created))

    def _read_dimension(self, ns_id: int) -> int | None:
        rows = self._read("SELECT dim FROM namespaces WHERE id = ?", (ns_id,))
        return rows[0][0] if rows else None

    def _set_dimension(self, ns_id: int, dim: int) -> None:
        sql = self._d.q("UPDATE namespaces SET dim = ? WHERE id = ? AND dim IS NULL")
        self._write(lambda cur: cur.execute(sql, (dim, ns_id)))

    def set_recorded_dimension(self, ns_id: int, dim: int | None) -> None:
        sql = self._d.q("UPDATE namespaces SET dim = ? WHERE id = ?")
        self._write(lambda cur: cur.execute(sql, (dim, ns_id)))

    def remove_namespace(self, ns_id: int, *, with_stats: bool) -> int:
        q = self._d.q

        def remove(cur: Any) -> int:
            cur.execute(q("DELETE FROM entries WHERE ns = ?"), (ns_id,))
            removed = max(cur.rowcount, 0)
            if with_stats:
                cur.execute(q("DELETE FROM stats WHERE ns = ?"), (ns_id,))
            cur.execute(q("DELETE FROM namespaces WHERE id = ?"), (ns_id,))
            return removed

        removed = self._write(remove)
        self._forget_namespaces()
        return removed

    def namespaces(self) -> list[Namespace]:
        return _sqltext.to_namespaces(self._read(_sqltext.select_namespaces(self._d.key_column)))

    # -- entries ------------------------------------------------------------

    def _get_rows(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        d = self._d

        def lookup(cur: Any) -> list[Any]:
            if len(ids) == 1:
                cur.execute(d.select_one, (ids[0],))
                return list(cur.fetchall())
            if d.postgres:
                cur.execute(d.select_any, (list(ids),))
                return list(cur.fetchall())
            rows: list[Any] = []
            step = d.max_params
            for start in range(0, len(ids), step):
                chunk = ids[start : start + step]
                cur.execute(
                    f"SELECT {_HIT_COLUMNS} FROM entries WHERE id IN ({d.marks(len(chunk))})", chunk
                )
                rows += cur.fetchall()
            return rows

        return self._query(lookup, binary=True)

    def _put(self, ns_id: int, batch: EntryBatch, stats: PendingStats) -> None:
        rows = [
            (i, ns_id, check, tokens, flags, u, c, vec.tobytes(), text)
            for i, check, tokens, flags, u, c, vec, text in batch.rows()
        ]
        # Id order: concurrent writers of overlapping batches then lock rows in the same
        # order, so PostgreSQL and InnoDB never see the lock cycles input order made; and
        # SQLite pages fill before they split, which keeps the file dense.
        rows.sort(key=itemgetter(0))

        def body(cur: Any) -> None:
            if rows:
                cur.executemany(self._d.insert_entries, rows)
            self._merge(cur, stats)

        self._write(body)

    def _flush_stats(self, stats: PendingStats) -> None:
        if stats.is_empty():
            return
        self._write(lambda cur: self._merge(cur, stats))

    def _merge(self, cur: Any, stats: PendingStats) -> None:
        # Sorted, like entries in put(): one lock order for every writer.
        if stats.deltas:
            cur.executemany(
                self._d.merge_stats,
                [(ns, day, *delta.as_tuple()) for (ns, day), delta in sorted(stats.deltas.items())],
            )
        for (_ns, day), touched in sorted(stats.touches.items()):
            ids = sorted(set(touched))
            step = self._d.max_params - 2
            for start in range(0, len(ids), step):
                chunk = ids[start : start + step]
                cur.execute(
                    self._d.q(
                        f"UPDATE entries SET used = ? WHERE used < ? AND id IN ({self._d.marks(len(chunk))})"
                    ),
                    (day, day, *chunk),
                )

    def delete(self, ns_id: int, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        ordered = sorted(ids)

        def remove(cur: Any) -> int:
            removed = 0
            step = self._d.max_params - 1
            for start in range(0, len(ordered), step):
                chunk = ordered[start : start + step]
                marks = self._d.marks(len(chunk))
                cur.execute(
                    self._d.q(f"DELETE FROM entries WHERE ns = ? AND id IN ({marks})"),
                    (ns_id, *chunk),
                )
                removed += max(cur.rowcount, 0)
            return removed

        return self._write(remove)

    def iter_entries(self, ns_id: int, batch_size: int = 2000) -> Iterator[list[ExportedEntry]]:
        last, op = (
            -(2**63),
            ">=",
        )  # the smallest int64 is a valid id, so the first page is inclusive
        while True:
            rows = self._read(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE ns = ? AND id {op} ? ORDER BY id LIMIT ?",
                (ns_id, last, batch_size),
            )
            op = ">"
            if not rows:
                return
            yield [_exported(i, c, t, f, u, cr, v, tx) for i, _ns, c, t, f, u, cr, v, tx in rows]
            last = rows[-1][0]

    def namespace_usage(self) -> dict[int, NamespaceUsage]:
        rows = self._read(
            f"SELECT ns, COUNT(*), SUM({self._d.length}(vec)), MIN(used), MAX(used) FROM entries GROUP BY ns"
        )
        return {
            int(ns): NamespaceUsage(entries=int(n), bytes=int(b or 0), first_used=lo, last_used=hi)
            for ns, n, b, lo, hi in rows
        }

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        sql, params = _sqltext.select_stats(since_day)
        return _sqltext.to_stats_rows(self._read(sql, params))

    # -- leases ---------------------------------------------------------------

    shares_leases = True

    def claim_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> list[bool]:
        if not ids:
            return []
        mine = self._write(lambda cur: self._leases.claim(cur, ns_id, ids, owner, ttl_ms))
        return [i in mine for i in ids]

    def renew_leases(self, ns_id: int, ids: Sequence[int], owner: str, ttl_ms: int) -> None:
        if ids:
            self._write(lambda cur: self._leases.renew(cur, ns_id, ids, owner, ttl_ms))

    def release_leases(self, ns_id: int, ids: Sequence[int], owner: str) -> None:
        if ids:
            self._write(lambda cur: self._leases.release(cur, ns_id, ids, owner))

    # -- batch jobs -----------------------------------------------------------

    def _insert_job(self, job_id: str, ns: int, state: str, created: int, doc: str) -> None:
        sql = self._d.q(
            "INSERT INTO jobs (id, ns, state, rev, created, doc) VALUES (?, ?, ?, 1, ?, ?)"
        )
        self._write(lambda cur: cur.execute(sql, (job_id, ns, state, created, doc)))

    def _replace_job(self, job_id: str, rev: int, state: str, doc: str) -> bool:
        sql = self._d.q(
            "UPDATE jobs SET state = ?, doc = ?, rev = rev + 1 WHERE id = ? AND rev = ?"
        )

        def body(cur: Any) -> bool:
            cur.execute(sql, (state, doc, job_id, rev))
            return bool(cur.rowcount == 1)

        return self._write(body)

    def _job_rows(self, pending: bool) -> list[tuple[str, int, str, int, str | bytes]]:
        where = " WHERE state <> 'collected'" if pending else ""
        rows = self._read(f"SELECT id, ns, state, rev, doc FROM jobs{where}")
        return [(str(i), int(n), str(s), int(r), d) for i, n, s, r, d in rows]

    def close(self) -> None:
        with suppress(Exception):
            self.flush()
        with self._connections_lock:
            conns, self._connections = self._connections, []
        for _thread, conn in conns:  # never a parent's: fork moved those to _inherited
            with suppress(Exception):
                conn.close()
        self._local = threading.local()
        self._engine.dispose()
