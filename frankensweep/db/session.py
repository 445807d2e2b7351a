"""Engines and sessions for SQLite (embedded) and PostgreSQL (scaled), and schema upgrades."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

#: the Alembic scripts, shipped inside the package (``frankensweep/migrations``)
MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

#: the database cannot be reached right now (restart, failover, network): try again later
DATABASE_DOWN = (
    exc.OperationalError,  # connection refused, or dropped mid-statement
    exc.InterfaceError,  # a connection already closed under us
    exc.TimeoutError,  # no pooled connection came back in time
)
#: our Alembic version table; Optuna (same database) keeps its own in ``alembic_version``
VERSION_TABLE = "frankensweep_alembic_version"


def make_engine(url: str, foreign_keys: bool = True) -> Engine:
    """An engine; SQLite gets WAL, foreign keys and a busy timeout for concurrent writers.

    ``foreign_keys=False`` is for migrations only: SQLite rebuilds a table by dropping it, and
    with foreign keys on that drop would cascade into the tables referring to it.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pre-ping: a connection broken by a database restart is replaced, not handed out;
    # connect_timeout: a database host that is down fails a request in 10 s instead of hanging
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": 10},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str):
    """Alembic's config pointing at the project's migrations and ``url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision`` (idempotent)."""
    from alembic import command

    _adopt_legacy_version_table(url)
    command.upgrade(alembic_config(url), revision)


def _adopt_legacy_version_table(url: str) -> None:
    """Databases made before Optuna shared them kept our revision in ``alembic_version``."""
    from sqlalchemy import inspect, text

    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        if "alembic_version" not in tables or VERSION_TABLE in tables or "sweeps" not in tables:
            return
        with engine.begin() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if version != "0001":  # not ours (an Optuna study's): leave it
                return
            conn.execute(text(f"ALTER TABLE alembic_version RENAME TO {VERSION_TABLE}"))
    finally:
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
