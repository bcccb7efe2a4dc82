"""Batch-API jobs recorded in the cache, and the tokens embedded through batch APIs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MYSQL_TABLE = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}


def upgrade() -> None:
    # One row per job: the columns a listing filters on, the rest (item ids per request,
    # file ids, request counts) as one JSON document. `rev` makes every update a
    # compare-and-set, so two collectors never both store a job's results.
    doc = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("ns", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("rev", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("doc", doc, nullable=False),
        **MYSQL_TABLE,
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    # A plain ADD COLUMN with a default: no table rebuild.
    op.add_column(
        "stats",
        sa.Column("tokens_batch", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("stats") as batch:
        batch.drop_column("tokens_batch")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_table("jobs")
