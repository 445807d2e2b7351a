"""Alembic migrations on real SQLite and PostgreSQL: up, down, up again; no drift from models."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from frankensweep.db import Base, make_engine, upgrade
from frankensweep.db.session import VERSION_TABLE, alembic_config, downgrade

TABLES = {"sweeps", "candidates", "results", "workers"}
UNIQUE = {
    "candidates": {"uq_candidate_sweep_digest": ["sweep_id", "digest"]},
    "results": {"uq_result_triple": ["model", "plan_digest", "eval_key"]},
    "workers": {"uq_worker_name_pid": ["name", "pid"]},
}
INDEXES = {
    "sweeps": {"ix_sweeps_status": ["status"]},
    "candidates": {
        "ix_candidates_digest": ["digest"],
        "ix_candidates_status": ["status"],
        "ix_candidates_sweep_id": ["sweep_id"],
    },
}


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def schema_diffs(engine) -> list:
    """What `alembic revision --autogenerate` would write: empty when models match the schema."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": VERSION_TABLE,
                "include_name": lambda name, type_, _p: type_ != "table" or name in TABLES,
            },
        )
        return compare_metadata(context, Base.metadata)


def assert_schema_at_head(engine) -> None:
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) >= TABLES
    for table in Base.metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(columns) == set(table.columns.keys()), table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (table.name, column.name)
        assert inspector.get_pk_constraint(table.name)["constrained_columns"] == ["id"]
    for table, expected in UNIQUE.items():
        found = {u["name"]: u["column_names"] for u in inspector.get_unique_constraints(table)}
        assert found == expected, table
    for table, expected in INDEXES.items():
        # PostgreSQL also lists the index behind each unique constraint
        indexes = [i for i in inspector.get_indexes(table) if not i.get("duplicates_constraint")]
        assert {i["name"]: i["column_names"] for i in indexes} == expected, table
        assert not any(i["unique"] for i in indexes)
    (fk,) = inspector.get_foreign_keys("candidates")
    assert fk["constrained_columns"] == ["sweep_id"]
    assert (fk["referred_table"], fk["referred_columns"]) == ("sweeps", ["id"])
    assert fk["options"].get("ondelete", "").upper() == "CASCADE"


def test_upgrade_downgrade_upgrade(database_url):
    """The fixture migrated to head; go down to base, check it is empty, and up again."""
    engine = make_engine(database_url)
    try:
        head = head_revision(database_url)
        assert current_revision(engine) == head
        assert_schema_at_head(engine)

        downgrade(database_url, "base")
        engine.dispose()
        inspector = inspect(engine)
        assert not TABLES & set(inspector.get_table_names())
        assert set(inspector.get_table_names()) <= {VERSION_TABLE}
        assert current_revision(engine) is None

        upgrade(database_url)
        upgrade(database_url)  # at head already: a no-op
        engine.dispose()
        assert current_revision(engine) == head
        assert_schema_at_head(engine)
        assert schema_diffs(engine) == []
    finally:
        engine.dispose()


def test_models_match_migrated_schema(database_url):
    """`alembic check`: autogenerate finds nothing to add, drop or alter."""
    engine = make_engine(database_url)
    try:
        diffs = schema_diffs(engine)
        assert diffs == [], "models and migrations disagree; write a revision:\n" + "\n".join(
            map(repr, diffs)
        )
    finally:
        engine.dispose()
    command.check(alembic_config(database_url))  # through migrations/env.py, as the CLI does


def test_downgrade_drops_tables_with_their_rows(database_url):
    """Downgrading a database holding rows works, and a new upgrade starts empty."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO results (model, plan_digest, plan, eval_key, eval_kind, metrics,"
                    " seconds, created_at) VALUES ('m', 'd', '0-4', 'k', 'ppl', '{}', 0,"
                    " CURRENT_TIMESTAMP)"
                )
            )
        engine.dispose()
        downgrade(database_url, "base")
        engine.dispose()
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(database_url)
        engine.dispose()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM results")).scalar_one() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_offline_sql_renders(backend, capsys):
    """`alembic upgrade head --sql` (what a DBA would review) renders without a database."""
    url = "sqlite://" if backend == "sqlite" else "postgresql+psycopg://user@localhost/db"
    command.upgrade(alembic_config(url), "head", sql=True)
    out = capsys.readouterr().out
    for table in TABLES:
        assert f"CREATE TABLE {table}" in out


def test_optuna_study_shares_the_database(database_url):
    """Optuna's tables (and its alembic_version) live beside ours; neither disturbs the other."""
    import optuna

    storage = optuna.storages.RDBStorage(database_url)
    study = optuna.create_study(storage=storage, study_name="shared")
    study.optimize(lambda t: t.suggest_int("x", 0, 4) ** 2, n_trials=2)
    storage.engine.dispose()
    upgrade(database_url)  # still at head, still ours
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision(database_url)
        assert {"studies", "trials", "alembic_version"} <= set(inspect(engine).get_table_names())
        assert schema_diffs(engine) == []
    finally:
        engine.dispose()
    command.check(alembic_config(database_url))
    assert len(optuna.load_study(study_name="shared", storage=database_url).trials) == 2


def test_legacy_version_table_is_adopted(database_url):
    """A database migrated when our revision lived in ``alembic_version`` upgrades in place."""
    downgrade(database_url, "0001")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {VERSION_TABLE} RENAME TO alembic_version"))
        upgrade(database_url)
        engine.dispose()
        assert current_revision(engine) == head_revision(database_url)
        assert "alembic_version" not in inspect(engine).get_table_names()
        assert_schema_at_head(engine)
    finally:
        engine.dispose()
