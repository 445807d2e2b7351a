"""Alembic environment: the URL is the caller's (frankensweep.db.upgrade) or the settings'."""

from __future__ import annotations

from alembic import context

from frankensweep.core.config import get_settings
from frankensweep.db.models import Base
from frankensweep.db.session import VERSION_TABLE, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _ours(name: str | None, type_: str, parent_names) -> bool:
    """Only frankensweep's tables: Optuna keeps its studies in the same database."""
    return type_ != "table" or name in Base.metadata.tables


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url, foreign_keys=False)  # SQLite table rebuilds must not cascade
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            version_table=VERSION_TABLE,
            include_name=_ours,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
