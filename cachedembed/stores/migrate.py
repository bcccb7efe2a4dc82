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

HEAD = "0002"
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
    with engine.begin() as conn:
        _lock(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _lock(conn: sa.Connection) -> None:
    name = conn.dialect.name
    if name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727100001)")
    elif name in ("mysql", "mariadb"):
        conn.exec_driver_sql("SELECT GET_LOCK('cachedembed_migrate', 60)")
