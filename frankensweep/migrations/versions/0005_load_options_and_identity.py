"""sweeps.load_options: how workers load the sweep's model (quantization, dtype, placement);
sweeps.identity: what the model key digests (each model's fingerprint, the keyed load options)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for sweeps stored before load options: their workers load as their settings say
    op.add_column("sweeps", sa.Column("load_options", sa.JSON(), nullable=True))
    # NULL for sweeps stored before: a worker then compares the whole key
    op.add_column("sweeps", sa.Column("identity", sa.JSON(), nullable=True))


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column in place (a batch rebuild would lose AUTOINCREMENT)
        op.execute("ALTER TABLE sweeps DROP COLUMN identity")
        op.execute("ALTER TABLE sweeps DROP COLUMN load_options")
    else:
        op.drop_column("sweeps", "identity")
        op.drop_column("sweeps", "load_options")
