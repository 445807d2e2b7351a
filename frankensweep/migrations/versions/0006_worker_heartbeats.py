"""worker heartbeats, and attempts kept across fidelity levels

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimant", sa.String(length=200), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=True),
        sa.Column("activity", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "pid", name="uq_worker_name_pid"),
    )
    op.add_column(
        "candidates",
        sa.Column("level_attempts", sa.Integer(), server_default="0", nullable=False),
    )
    # until now attempts restarted at each promotion: they are the claims at the current level
    op.execute("UPDATE candidates SET level_attempts = attempts")


def downgrade() -> None:
    op.drop_column("candidates", "level_attempts")
    op.drop_table("workers")
