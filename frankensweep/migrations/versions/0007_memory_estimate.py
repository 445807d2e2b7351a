"""sweeps.memory: the memory planner's estimate of a worker's peak for the sweep, made at
submission (estimate, worker memory, largest parts)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for sweeps stored before the planner: nothing is shown for them
    op.add_column("sweeps", sa.Column("memory", sa.JSON(), nullable=True))


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column in place (a batch rebuild would lose AUTOINCREMENT)
        op.execute("ALTER TABLE sweeps DROP COLUMN memory")
    else:
        op.drop_column("sweeps", "memory")
