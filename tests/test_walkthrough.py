"""The README's "Scaled mode, step by step", run as written on this machine's Debian packages.

Every ```sh block of that section runs in bash, in order, each with the environment the
previous one left (its exports). A block of ``frankensweep serve`` or ``frankensweep worker``
lines is what the README runs in other terminals: those are started in the background (the
worker block twice, as the README says) and stopped at the end. What the test changes, and why:

- Debian's packages would start PostgreSQL and Redis as services on ports 5432 and 6379. This
  machine may hold other servers there, so the test starts its own: a Debian cluster
  (``pg_createcluster``, Debian's default authentication) and a ``redis-server`` with a copy of
  Debian's ``/etc/redis/redis.conf``, on free loopback ports; 5432, 6379 and 8000 in the blocks
  become those ports (``PGPORT`` for ``psql`` / ``createdb``, ``-p`` for ``redis-cli``).
- ``sudo apt-get install -y PACKAGES`` becomes a check that they are installed
  (``scripts/install-services.sh`` installs PostgreSQL and Redis); ``make install && .
  .venv/bin/activate`` becomes this test's virtualenv on ``PATH``; the tests run as root, so
  ``sudo -u USER`` is ``runuser -u USER --`` and a bare ``sudo`` runs the command.

The cluster, its role and database, and the Redis server are removed afterwards.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from frankensweep.core.net import free_port
from frankensweep.testing.processes import Processes, wait_for_health, wait_for_log
from frankensweep.testing.services import RedisServer, postgres_bindir

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Scaled mode, step by step"
BACKGROUND = ("frankensweep serve", "frankensweep worker")
#: bash, before every block: the README's ``sudo`` as root
PRELUDE = """set -euo pipefail
sudo() {
    if [ "$1" = "-u" ]; then local user=$2; shift 2; runuser -u "$user" -- "$@"; else "$@"; fi
}
"""


def walkthrough() -> list[str]:
    """The ```sh blocks of the README's walk-through, in order."""
    text = README.read_text()
    start = text.index(SECTION) + len(SECTION)
    end = text.index("\n### ", start)
    return re.findall(r"```sh\n(.*?)```", text[start:end], re.S)


def adapted(block: str, ports: dict[str, int]) -> str:
    """The block as this test runs it (see the module docstring)."""
    for default, port in ports.items():
        block = block.replace(default, str(port))
    lines = []
    for line in block.splitlines():
        if line.startswith("sudo apt-get install -y "):
            packages = line.removeprefix("sudo apt-get install -y ").split()
            line = f"dpkg -s {' '.join(packages)} > /dev/null"
        elif line == "make install && . .venv/bin/activate":
            line = ":  # this test's virtualenv is on PATH"
        line = line.replace("redis-cli ", f"redis-cli -p {ports['6379']} ")
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_block(block: str, env: dict[str, str], cwd: Path) -> tuple[dict[str, str], str]:
    """Run a block in bash; the environment it leaves and what it printed."""
    env_file = cwd / ".env-after"
    script = PRELUDE + block + f"env -0 > {shlex.quote(str(env_file))}\n"
    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 0, f"step failed ({done.returncode}):\n{block}\n{printed}"
    pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return dict(pairs), printed


class DebianCluster:
    """A PostgreSQL cluster made with Debian's tools on a free loopback port."""

    def __init__(self, port: int) -> None:
        self.version = postgres_bindir().parent.name
        self.name = f"fs_walkthrough_{os.getpid()}"
        self.port = port

    def __enter__(self) -> DebianCluster:
        if not shutil.which("pg_createcluster"):
            pytest.fail("pg_createcluster not found: run scripts/install-services.sh")
        subprocess.run(
            ["pg_createcluster", self.version, self.name, "-p", str(self.port)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["pg_ctlcluster", self.version, self.name, "start"], check=True, capture_output=True
        )
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name], check=True, capture_output=True
        )


class DebianRedis(RedisServer):
    """``redis-server`` with Debian's configuration file, moved to a free port and a folder of
    its own (in the foreground, not daemonized)."""

    def _command(self) -> list[str]:
        config = self.root / "redis.conf"
        overrides = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "daemonize": "no",
            "supervised": "no",
            "dir": str(self.root),
            "logfile": str(self.log),
            "pidfile": str(self.root / "redis.pid"),
        }
        if not config.exists():  # later lines win in redis.conf
            moved = "".join(f"{key} {value}\n" for key, value in overrides.items())
            config.write_text(Path("/etc/redis/redis.conf").read_text() + "\n" + moved)
        return [self.binary, str(config)]


def test_readme_scaled_walkthrough(tmp_path):
    ports = {"5432": free_port(), "6379": free_port(), "8000": free_port()}
    blocks = walkthrough()
    assert len(blocks) == 7, blocks
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(tmp_path, 0o755)  # runuser -u postgres starts in this folder
    os.chmod(work, 0o755)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PGPORT": str(ports["5432"]),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "COLUMNS": "200",
        "FRANKENSWEEP_DEVICE": "cpu",
    }
    for name in [k for k in env if k.startswith("FRANKENSWEEP_") and k != "FRANKENSWEEP_DEVICE"]:
        env.pop(name)
    url = f"http://127.0.0.1:{ports['8000']}"
    procs = Processes(tmp_path, env)
    cluster = DebianCluster(ports["5432"])
    out = ""
    with cluster, DebianRedis(port=ports["6379"]) as redis:
        try:
            for block in blocks:
                block = adapted(block, ports)
                commands = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
                if all(c.startswith(BACKGROUND) for c in commands):
                    procs.env = env  # the exports so far, as in the README's other terminals
                    for command in commands:
                        start_background(procs, shlex.split(command)[1:], url)
                    continue
                env, out = run_block(block, env, work)

            assert "sweep 1 done" in out and "reference" in out and "0-30" in out, out
            sweep = httpx.get(f"{url}/api/sweeps/1", timeout=10).json()
            assert sweep["status"] == "done" and sweep["strategy"]["kind"] == "halving"
            assert sweep["progress"]["finished"] == sweep["progress"]["total"] > 0
            assert sweep["progress"]["round_label"] == "round 2 of 2 · last round"
            assert "walk-through" in httpx.get(f"{url}/", timeout=10).text  # the dashboard
            # Redis keeps its append-only file, in its running settings and in its file
            check = subprocess.run(
                ["redis-cli", "-p", str(redis.port), "CONFIG", "GET", "appendonly"],
                capture_output=True,
                text=True,
            )
            assert check.stdout.split() == ["appendonly", "yes"], check.stdout
            assert re.search(r"(?m)^appendonly yes$", (redis.root / "redis.conf").read_text())
            # the database URL names the role, its password and the cluster's port
            assert env["FRANKENSWEEP_DATABASE_URL"] == (
                "postgresql+psycopg://frankensweep:change-me@127.0.0.1:"
                f"{ports['5432']}/frankensweep"
            )
            names = {n for w in ("worker1", "worker2") for n in ready(procs, w)}
            assert len(names) == 2 and all(n.startswith("worker-") for n in names), names
        finally:
            procs.stop_all()
    clusters = subprocess.run(["pg_lsclusters"], capture_output=True, text=True).stdout
    assert cluster.name not in clusters


def start_background(procs: Processes, args: list[str], url: str) -> None:
    """``frankensweep serve`` once, ``frankensweep worker`` twice (the README's terminals)."""
    if args[0] == "serve":
        procs.start("api", *args)
        wait_for_health(url, procs)
        return
    for name in ("worker1", "worker2"):
        procs.start(name, *args)
        wait_for_log(procs, name, " ready.")


def ready(procs: Processes, name: str) -> list[str]:
    """The node name a worker announced (Celery's ``<name> ready.``)."""
    return re.findall(r"(\S+@\S+) ready\.", procs.log(name, 100_000))
