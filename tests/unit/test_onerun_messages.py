"""No message onerun prints may tell an operator to delete or move a database.

A database that onerun cannot classify, or that a start refuses, may still hold a cloud;
the only safe advice is to stop, check, restore a backup or point the settings elsewhere.
This scans every string in the package (f-strings included), since refusal reasons and
fixes are built in many modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "onerun"

# A destructive verb whose object is the database (or "it", meaning the database file).
DESTRUCTIVE = re.compile(
    r"\b(drop|delete|remove|erase|wipe|truncate|move|rename|rm)\b"
    r"(\s+(the|this|that|your|its))?\s+"
    r"(database|db\b|one\.db|it\s+away|it\s+aside|DB_NAME)",
    re.IGNORECASE,
)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant, with adjacent f-string parts joined into one text."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(part.value if isinstance(part, ast.Constant) else "{}"
                           for part in node.values)
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def _is_sql(text: str) -> bool:
    return text.lstrip().startswith(("DROP ", "DELETE ", "SELECT ", "CREATE ", "INSERT "))


def test_no_message_suggests_deleting_or_moving_a_database() -> None:
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _strings(ast.parse(path.read_text(), str(path))):
            if not _is_sql(text) and DESTRUCTIVE.search(text):
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert offending == []


def test_the_scan_finds_what_it_looks_for() -> None:
    for bad in ("or move it away to start a new cloud", "drop the database if it holds nothing",
                "delete one.db and restart", "remove the DB"):
        assert DESTRUCTIVE.search(bad), bad
    for fine in ("restore a backup (`onerun restore FILE`)", "remove that file if the upgrade did "
                 "complete", "check DB_HOST/DB_NAME point at the right database"):
        assert not DESTRUCTIVE.search(fine), fine
