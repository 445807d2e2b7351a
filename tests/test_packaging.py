"""The package as users get it: ``python -m`` entry points, and a wheel installed (not editable)
into a fresh virtualenv that migrates a new database and lists plans away from the checkout."""

from __future__ import annotations

import json
import os
import shutil
import site
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what the wheel is built from: the package and its metadata, nothing of the working tree
SOURCES = ("pyproject.toml", "README.md", "frankensweep")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_python_dash_m_frankensweep_runs_service_commands():
    proc = run(sys.executable, "-m", "frankensweep", "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Run the API" in proc.stdout and "--port" in proc.stdout


def test_python_dash_m_frankensweep_cli_runs_every_command():
    proc = run(sys.executable, "-m", "frankensweep.cli", "plans", "--layers", "30", "--rys")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 30 * 31 // 2 + 1
    serve = run(sys.executable, "-m", "frankensweep.cli", "serve", "--help")
    assert serve.returncode == 0, serve.stderr  # the service commands are on the same app


def test_python_dash_m_user_error_is_one_line_and_exit_2():
    proc = run(sys.executable, "-m", "frankensweep", "plans", "--layers", "30", "--jump", "3")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: the overlap space needs --slice-size, --last-slice")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout installed into it (not
    editable); the dependencies come from this interpreter's site-packages (no download)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    build = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--wheel-dir", str(dist), str(source),
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("frankensweep-*.whl")
    venv = tmp / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = run(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)
    )
    assert install.returncode == 0, install.stdout + install.stderr
    purelib = run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    # the dependencies (torch, transformers, ...) are this environment's; a plain path line adds
    # the directory without running its .pth files, so the editable checkout stays out
    (Path(purelib.stdout.strip()) / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRANKENSWEEP_", "PYTHON"))}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def test_the_installed_wheel_is_not_the_checkout_and_holds_every_file(installed, tmp_path):
    python = str(installed / "bin" / "python")
    code = "import frankensweep; print(frankensweep.__file__)"
    proc = run(python, "-c", code, cwd=tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    package = Path(proc.stdout.strip()).parent
    assert package.is_relative_to(installed), proc.stdout
    source = ROOT / "frankensweep"
    wanted = {
        p.relative_to(source)
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert wanted and sorted(w for w in wanted if not (package / w).is_file()) == []


def test_the_installed_wheel_migrates_a_new_sqlite_file(installed, tmp_path):
    database = tmp_path / "new.db"
    env = clean_env(FRANKENSWEEP_DATABASE_URL=f"sqlite:///{database}")
    proc = run(str(installed / "bin" / "frankensweep"), "migrate", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (version,) = conn.execute("SELECT version_num FROM frankensweep_alembic_version").fetchone()
    assert {"sweeps", "candidates", "results"} <= tables
    heads = sorted(p.name for p in (ROOT / "frankensweep/migrations/versions").glob("0*.py"))
    assert heads[-1].startswith(version)  # the newest revision


def test_the_installed_wheel_lists_plans(installed, tmp_path):
    proc = run(
        str(installed / "bin" / "frankensweep"),
        "plans", "--layers", "30", "--slice-size", "8:14:2", "--jump", "3:5", "--last-slice", "8",
        cwd=tmp_path,
        env=clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plans = [json.loads(line) for line in proc.stdout.splitlines()]
    assert plans and all(p["plan"].startswith("0-") and p["plan"].endswith("-30") for p in plans)
    assert "kept" in proc.stderr
