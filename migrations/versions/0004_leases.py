"""Leases: which process is embedding which text, so a fleet pays the provider once per text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MYSQL_TABLE = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}


def upgrade() -> None:
    # One row per text being embedded somewhere: its owner and when the lease runs out,
    # in milliseconds of the database server's clock (every client compares against the
    # same clock). Rows are deleted when their texts are stored; an expired one is taken
    # over by the next claimer.
    op.create_table(
        "leases",
        sa.Column("ns", sa.Integer(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ns", "id"),
        **MYSQL_TABLE,
    )


def downgrade() -> None:
    op.drop_table("leases")
