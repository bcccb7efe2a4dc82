"""Throwaway databases on the PostgreSQL, MariaDB and Redis servers the shared-cache tests run against.

Each database (on Redis: each key prefix) gets a unique name and is dropped afterwards, so
concurrent test runs never meet. A server that cannot be reached is an error, never a
skip: CI has all three running (``.ci/services`` starts them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_HOST = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
REDIS = "redis://127.0.0.1:6379/0"


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
