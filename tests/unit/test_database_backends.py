"""What differs between sqlite and MariaDB is asked of onerun.database's Backend, never of
DB_BACKEND directly: a new backend then means one new class, not a hunt for branches."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from onerun.database import backend_for
from onerun.layout import Layout
from onerun.settings import load_settings

PACKAGE = Path(__file__).resolve().parents[2] / "onerun"
# settings/checks.py validates DB_* per backend (DB_HOST and DB_PASSWORD required for mysql,
# HA on sqlite only): it reads the environment before any backend exists.
ALLOWED = {PACKAGE / "database", PACKAGE / "settings" / "checks.py"}
BACKEND_NAMES = {"mysql", "sqlite", "mariadb"}


def _outside_database(suffix: str) -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob(f"*{suffix}"))
            if not any(path == allowed or allowed in path.parents for allowed in ALLOWED)]


def _compares_to_a_backend_name(node: ast.Compare) -> bool:
    operands = [node.left, *node.comparators]
    names = [o for o in operands if isinstance(o, ast.Constant) and o.value in BACKEND_NAMES]
    return bool(names) and len(names) < len(operands)


def test_no_module_outside_the_database_package_branches_on_the_backend() -> None:
    offending = []
    for path in _outside_database(".py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and _compares_to_a_backend_name(node):
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    for path in _outside_database(".j2"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"backend\s*[!=]=", line):
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{number}")
    assert offending == []


@pytest.mark.parametrize(("environment", "name", "on_volume", "onedb"), [
    ({}, "sqlite", True, ["-s", "/var/lib/one/one.db"]),
    ({"DB_BACKEND": "mariadb", "DB_HOST": "db", "DB_PASSWORD": "Canary-Pw-1"}, "mysql", False,
     ["-t", "mysql", "-S", "db", "-P", "3306", "-u", "oneadmin", "-d", "opennebula"]),
])
def test_backend_for_follows_db_backend(environment: dict[str, str], name: str,
                                        on_volume: bool, onedb: list[str]) -> None:
    settings = load_settings(environment)
    backend = backend_for(settings)
    assert (backend.name, backend.stored_on_volume) == (name, on_volume)
    assert backend.onedb_options(settings, Layout(Path("/"))) == onedb
