"""sweeps.model_key (results keyed by the model's content), ids never reused on SQLite

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _tables(model_key: bool) -> tuple[sa.Table, sa.Table]:
    """sweeps and candidates as they stand at this revision (with or without model_key): the
    definitions SQLite's table rebuild copies from, online and offline (--sql) alike."""
    meta = sa.MetaData()
    when = sa.DateTime(timezone=True)
    sweeps = sa.Table(
        "sweeps",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model", sa.String(1000), nullable=False),
        *([sa.Column("model_key", sa.String(1000), nullable=True)] if model_key else []),
        sa.Column("num_layers", sa.Integer(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("evals", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("started_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=True),
        sa.Column("dispatched_at", when, nullable=True),
        sa.Column("round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("search_finished", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Index("ix_sweeps_status", "status"),
    )
    candidates = sa.Table(
        "candidates",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("is_reference", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fidelity", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("started_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=True),
        sa.Column("round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("trial", sa.Integer(), nullable=True),
        sa.Column("pruned_reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("sweep_id", "digest", name="uq_candidate_sweep_digest"),
        sa.Index("ix_candidates_digest", "digest"),
        sa.Index("ix_candidates_status", "status"),
        sa.Index("ix_candidates_sweep_id", "sweep_id"),
    )
    return sweeps, candidates


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("model_key", sa.String(1000), nullable=True))
    # sweeps stored before keys existed keep finding their results, stored under the model name
    op.execute("UPDATE sweeps SET model_key = model")
    sqlite = op.get_context().dialect.name == "sqlite"
    sweeps, candidates = _tables(model_key=True)
    # SQLite: rebuilt with AUTOINCREMENT, so a deleted row's id is never given out again
    # (PostgreSQL sequences never reuse ids)
    with op.batch_alter_table(
        "sweeps",
        copy_from=sweeps,
        recreate="always" if sqlite else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        batch.alter_column("model_key", existing_type=sa.String(1000), nullable=False)
    if sqlite:
        with op.batch_alter_table(
            "candidates",
            copy_from=candidates,
            recreate="always",
            table_kwargs={"sqlite_autoincrement": True},
        ):
            pass


def downgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    sweeps, candidates = _tables(model_key=True)
    if sqlite:
        with op.batch_alter_table("candidates", copy_from=candidates, recreate="always"):
            pass
    with op.batch_alter_table(
        "sweeps", copy_from=sweeps, recreate="always" if sqlite else "auto"
    ) as batch:
        batch.drop_column("model_key")
