"""Initial schema: namespaces, entries (integer-keyed vectors) and per-day stats.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite makes a column the rowid (the fastest key it has) only when it is declared
# exactly INTEGER PRIMARY KEY; other databases need a 64-bit type.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# MySQL's BLOB stops at 64 KiB: enough for 16k float32 dimensions, but be generous.
VECTOR = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
# MySQL tables take the server's default charset and engine unless told: texts and
# specs need full Unicode (utf8mb4, emoji included) and transactions need InnoDB.
MYSQL_TABLE = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(32), nullable=False, unique=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        **MYSQL_TABLE,
    )
    op.create_table(
        "entries",
        sa.Column("id", ID, primary_key=True, autoincrement=False),
        sa.Column("ns", sa.Integer(), nullable=False),
        sa.Column("chk", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("flags", sa.SmallInteger(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("vec", VECTOR, nullable=False),
        **MYSQL_TABLE,
    )
    op.create_index("ix_entries_ns_used", "entries", ["ns", "used"])
    op.create_table(
        "stats",
        sa.Column("ns", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("day", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("calls", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("hits", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("misses", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("provider_calls", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("provider_seconds", sa.Float(precision=53), nullable=False, server_default="0"),
        sa.Column("tokens_embedded", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tokens_embedded_estimated", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tokens_saved", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tokens_saved_estimated", sa.BigInteger(), nullable=False, server_default="0"),
        **MYSQL_TABLE,
    )


def downgrade() -> None:
    op.drop_table("stats")
    op.drop_index("ix_entries_ns_used", table_name="entries")
    op.drop_table("entries")
    op.drop_table("namespaces")
