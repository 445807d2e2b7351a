"""evaluation rounds, fidelity levels, Optuna trials and pruning reasons

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD/DROP COLUMN: SQLite supports them, and offline (--sql) mode needs no reflection
    op.add_column("sweeps", sa.Column("round", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "sweeps",
        sa.Column("search_finished", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    # sweeps stored before strategies existed were grids: their one round is their last
    op.execute("UPDATE sweeps SET search_finished = true")
    op.execute("UPDATE candidates SET fidelity = 0 WHERE fidelity IS NULL")
    op.add_column(
        "candidates", sa.Column("round", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("candidates", sa.Column("trial", sa.Integer(), nullable=True))
    op.add_column("candidates", sa.Column("pruned_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    for column in ("pruned_reason", "trial", "round"):
        op.drop_column("candidates", column)
    for column in ("search_finished", "round"):
        op.drop_column("sweeps", column)
