"""Real PostgreSQL and Redis servers for the tests: native, throwaway, loopback only.

Each server lives in its own temporary directory (data, log, unix socket) and listens on a free
port of 127.0.0.1. PostgreSQL refuses to run as root, so as root its programs run as the
``postgres`` system user (created by Debian's package) through ``runuser``. A missing binary fails
the tests that need it, naming ``scripts/install-services.sh``: nothing is skipped.

The pytest fixtures over them are in ``tests/conftest.py``.

Tests that need a server of their own (say Redis with an append-only file) use the classes as
context managers: ``with RedisServer(appendonly=True) as redis: ...``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from frankensweep.core.net import free_port

INSTALL_HINT = "run `bash scripts/install-services.sh` (as root) to install it"
START_TIMEOUT = 30.0


class ServiceError(RuntimeError):
    """A server could not be found, started or stopped."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_in_use_message(log: Path) -> bool:
    text = _tail(log, 50).lower()
    return "address already in use" in text or "could not create any tcp/ip sockets" in text


# --------------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` (newest version first)."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(out.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        bindir = Path(candidate)
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise ServiceError(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: {INSTALL_HINT}"
    )


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb in a temporary directory, one port of 127.0.0.1.

    Authentication is ``trust`` for the superuser ``postgres``; durability is off (``fsync``,
    ``synchronous_commit`` and ``full_page_writes``), which only matters if the machine crashes.
    """

    user = "postgres"

    def __init__(self, database: str = "frankensweep", port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.database = database
        self.port = port or free_port()
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "running as root, PostgreSQL needs the `postgres` system user, which Debian's "
                    f"postgresql package creates: {INSTALL_HINT}"
                ) from None
            if not shutil.which("runuser"):
                raise ServiceError("running as root, `runuser` (util-linux) is needed")
            self.run_as = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="fs-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._initialized = False

    # -- URLs

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's own database."""
        return self.url_for(self.database)

    # -- processes

    def _run(self, *args: str, timeout: float = 60.0, check: bool = True):
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC"},
        )
        if check and result.returncode != 0:
            raise ServiceError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n--- {self.log}:\n{_tail(self.log)}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "timezone": "'UTC'",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# frankensweep tests\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._initialized = True

    def is_running(self) -> bool:
        return (
            self._initialized
            and self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0
        )

    def start(self) -> None:
        """Start the cluster (initdb the first time); returns once it accepts connections."""
        if not self._initialized:
            self._initdb()
        elif self.is_running():
            return
        for attempt in range(3):
            result = self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-o",
                f"-p {self.port}",
                timeout=START_TIMEOUT + 10,
                check=False,
            )
            if result.returncode == 0:
                break
            if attempt < 2 and _port_in_use_message(self.log):
                self.port = free_port()  # lost a race for the port: take another
                continue
            raise ServiceError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port}:\n{result.stdout}"
                f"{result.stderr}\n--- {self.log}:\n{_tail(self.log)}"
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster: ``immediate`` (a crash: recovery on next start) or ``fast``."""
        if not self.is_running():
            return
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (immediately), stay down ``down_seconds``, start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        """Stop the cluster and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        if self.database != "postgres":
            self.create_database(self.database)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- databases

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE/DROP DATABASE need it)."""
        import psycopg

        with psycopg.connect(self._dsn(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing whatever connections are still open to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------- Redis


def redis_binary() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if not path:
        raise ServiceError(f"redis-server not found: {INSTALL_HINT}")
    return path


class RedisServer:
    """A throwaway ``redis-server`` on one port of 127.0.0.1, its files in a temporary directory.

    Without persistence by default (a restart loses every key, like a broker that crashed with its
    data); ``appendonly=True`` keeps an append-only file fsynced every second across restarts.
    """

    def __init__(self, port: int | None = None, appendonly: bool = False) -> None:
        self.binary = redis_binary()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.root = Path(tempfile.mkdtemp(prefix="fs-redis-"))
        self.log = self.root / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.root), "--logfile", str(self.log), "--daemonize", "no"]
        command += ["--save", "", "--protected-mode", "yes", "--loglevel", "warning"]
        if self.appendonly:
            command += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            command += ["--appendonly", "no"]
        return command

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start the server; returns once it answers PING."""
        if self.is_running():
            return
        for attempt in range(3):
            self.process = subprocess.Popen(
                self._command(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches pytest, which stops the server itself
            )
            deadline = time.monotonic() + START_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                if self.ping():
                    return
                time.sleep(0.02)
            if self.process.poll() is None:
                self._kill()
                raise ServiceError(f"redis-server did not answer on {self.url}:\n{_tail(self.log)}")
            if attempt < 2 and _port_in_use_message(self.log):
                self.port = free_port()
                continue
            raise ServiceError(
                f"redis-server exited with {self.process.returncode}:\n{_tail(self.log)}"
            )

    def _kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (graceful) or SIGKILL (``kill=True``, like a crash)."""
        if not self.is_running():
            return
        assert self.process is not None
        if kill:
            self._kill()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill()

    def restart(self, down_seconds: float = 0.0, kill: bool = False) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port."""
        self.stop(kill=kill)
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        try:
            self.stop(kill=True)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
