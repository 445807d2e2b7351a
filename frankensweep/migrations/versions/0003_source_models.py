"""named source models of a sweep (interleaves of several models)

Revision ID: 0003_source_models
Revises: 0002
Create Date: 2026-12-01 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_source_models"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("models", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("sweeps", "models")
