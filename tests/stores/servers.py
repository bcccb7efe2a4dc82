"""Throwaway databases on the PostgreSQL and MariaDB servers the shared-cache tests run against.

Each database gets a unique name and is dropped afterwards, so concurrent test runs never
meet. A server that cannot be reached is an error, never a skip: CI has both running
(``.ci/services`` starts them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_HOST = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def unique_name(prefix: str = "ce") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database; yields its ``postgresql+psycopg://`` URL."""
    import psycopg

    name = unique_name()
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh MariaDB/MySQL database; yields its ``mysql+pymysql://`` URL."""
    import pymysql

    name = unique_name()
    admin = pymysql.connect(**MYSQL_HOST, connect_timeout=10, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@contextmanager
def server_database(kind: str) -> Iterator[str]:
    """``kind`` is ``"postgresql"`` or ``"mariadb"``."""
    factory = {"postgresql": postgres_database, "mariadb": mariadb_database}[kind]
    with factory() as url:
        yield url
