"""The package's dependencies point one way (DESIGN.md's layout), checked on the imports of
every module: ``search`` <- ``evals`` / ``strategies`` <- ``sweeps`` <- ``worker`` / ``api``,
with ``core`` (settings and shared rules), ``models`` (named base models) and ``db`` below;
``export`` (formats a plan is written in) sits on ``worker`` and under ``api`` / ``cli``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "frankensweep"

#: package -> the frankensweep packages it may import (itself always)
ALLOWED = {
    "core": set(),
    "search": {"core"},
    "models": {"core"},
    "db": {"core"},
    "evals": {"core", "search"},
    "strategies": {"core", "search", "evals"},
    "sweeps": {"core", "search", "evals", "strategies", "models", "db"},
    "worker": {"core", "search", "evals", "strategies", "models", "db", "sweeps"},
    "export": {"core", "search", "models", "worker"},
    "api": {"core", "search", "evals", "strategies", "models", "db", "sweeps", "worker", "export"},
    "cli": {"core", "search", "evals", "models", "db", "worker", "api", "client", "export"},
    "migrations": {"core", "db"},
}


def imports(path: Path) -> set[str]:
    """The frankensweep packages a module imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "frankensweep" and len(parts) > 1:
                found.add(parts[1])
    return found


def modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_those_below_it(package):
    assert modules(package), f"no package {package}"
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(imports(path) - ALLOWED[package] - {package})
        for path in modules(package)
    }
    assert not {k: v for k, v in wrong.items() if v}


def test_the_check_can_fail():
    """A control: the API imports the sweep lifecycle, which the strategies may not."""
    assert "sweeps" in imports(PACKAGE / "api" / "routes" / "sweeps.py")
    assert "sweeps" not in ALLOWED["strategies"]


def test_nothing_in_the_service_imports_test_support():
    users = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "testing" in imports(path) and path.parent.name != "testing"
    ]
    assert users == []
