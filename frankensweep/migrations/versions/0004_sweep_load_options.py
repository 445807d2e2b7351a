"""sweeps.load_options: how workers load the sweep's model (quantization, dtype, placement)

Revision ID: 0004_sweep_load_options
Revises: 0003
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_sweep_load_options"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for sweeps stored before load options: their workers load as their settings say
    op.add_column("sweeps", sa.Column("load_options", sa.JSON(), nullable=True))


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column in place (a batch rebuild would lose AUTOINCREMENT)
        op.execute("ALTER TABLE sweeps DROP COLUMN load_options")
    else:
        op.drop_column("sweeps", "load_options")
