"""Run the Alembic migrations that create and upgrade SQL caches.

The scripts live in the repository's top-level ``migrations/`` folder and are shipped
inside the wheel as ``cachedembed/_migrations``; this module finds whichever exists.
Opening a cache checks the stored revision against :data:`HEAD` with one query and only
imports Alembic when an upgrade is actually due, keeping cache opening cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # SQLAlchemy loads with the SQL store; reading HEAD must not import it
    import sqlalchemy as sa

HEAD = "0004"
"""Newest migration revision; a test keeps it equal to Alembic's own head."""


def migrations_path() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"cachedembed's migration scripts are missing (looked in {package / '_migrations'}); "
        "reinstall the package"
    )


def current_revision(conn: sa.Connection) -> str | None:
    """The revision stamped in the database, or ``None`` for an empty database."""
    import sqlalchemy as sa

    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the schema behind ``engine`` to ``revision`` inside one transaction.

    Concurrent openers are serialised by the database itself: SQLite's ``BEGIN IMMEDIATE``,
    a PostgreSQL advisory lock, or a MySQL named lock; the loser finds the work done.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    with engine.connect() as conn:
        _lock_session(conn)
        try:
            with conn.begin():
                _lock_transaction(conn)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        finally:
            # Only after the commit: a waiter that got the lock earlier would read the
            # old revision and run the same migration again.
            _unlock_session(conn)


_LOCK_ID = 727100001
_LOCK_NAME = "cachedembed_migrate"
_LOCK_WAIT = 300
"""Seconds a MySQL opener waits for another one's migration before giving up."""


def _lock_transaction(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Released by the transaction's end; PostgreSQL DDL is transactional, so a waiter
        # wakes up to a committed schema (or to nothing, if the migration failed).
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")


def _lock_session(conn: sa.Connection) -> None:
    if conn.dialect.name not in ("mysql", "mariadb"):
        return
    # MySQL commits implicitly around every DDL statement, which would end any
    # transaction-scoped lock; GET_LOCK belongs to the session instead and holds across
    # those implicit commits until _unlock_session (or the connection closes).
    got = conn.exec_driver_sql(f"SELECT GET_LOCK('{_LOCK_NAME}', {_LOCK_WAIT})").scalar()
    conn.commit()  # end the implicit transaction so the migration's snapshot starts after the wait
    if got != 1:
        raise TimeoutError(f"another process held the migration lock for over {_LOCK_WAIT} s")


def _unlock_session(conn: sa.Connection) -> None:
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"SELECT RELEASE_LOCK('{_LOCK_NAME}')")
        conn.commit()
