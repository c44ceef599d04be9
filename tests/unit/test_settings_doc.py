"""docs/settings.md's table of variables is the settings table, rendered.

When one of these fails, run `python -m onerun.settings.doc` (it rewrites the part of
docs/settings.md between its marker comments) and commit the result.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from onerun.settings.doc import (
    BEGIN,
    DOCUMENT,
    END,
    REGENERATE,
    default_cell,
    render_document,
    render_table,
)
from onerun.settings.schema import SETTINGS

PROJECT = Path(__file__).resolve().parents[2]


def documented_rows(text: str) -> dict[str, list[str]]:
    """{variable: its cells} of the table between the markers, as a reader sees it."""
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[cells[0].split("`")[1]] = cells
    return rows


def test_docs_settings_md_is_the_rendered_table() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert render_document(text) == text, f"docs/settings.md is out of date: {REGENERATE}"


def test_every_declared_setting_is_documented_with_its_default_and_secrecy() -> None:
    rows = documented_rows(DOCUMENT.read_text(encoding="utf-8"))
    declared = [d.name for d in SETTINGS]
    assert sorted(rows) == sorted(declared), (
        f"documented but not declared: {sorted(set(rows) - set(declared))}; declared but not "
        f"documented: {sorted(set(declared) - set(rows))}: {REGENERATE}")
    for declaration in SETTINGS:
        variable, default, description, rules = rows[declaration.name]
        assert variable.endswith("(`_FILE`)") == declaration.secret, REGENERATE
        assert default == default_cell(declaration), REGENERATE
        assert description == declaration.description, REGENERATE
        assert rules == declaration.rule_doc, REGENERATE


def test_the_comparison_catches_a_setting_out_of_step() -> None:
    """A row dropped, a default changed or secrecy lost each make the document differ."""
    text = render_document(DOCUMENT.read_text(encoding="utf-8"))
    port = next(d for d in SETTINGS if d.name == "DB_PORT")
    key = next(d for d in SETTINGS if d.name == "ONE_KEY")
    for table in ([d for d in SETTINGS if d is not port],
                  [dataclasses.replace(d, default=3307) if d is port else d for d in SETTINGS],
                  [dataclasses.replace(d, secret=False) if d is key else d for d in SETTINGS]):
        assert render_document(text, table) != text
    edited = text.replace("| `DB_PORT` | `3306` |", "| `DB_PORT` | `3307` |")
    assert edited != text and render_document(edited) == text


def test_the_table_has_one_row_per_declaration_and_no_bare_pipe() -> None:
    lines = render_table().splitlines()
    assert len(lines) == 2 + len(SETTINGS)
    assert all(line.count(" | ") == 3 for line in lines[2:])


def test_missing_markers_are_named() -> None:
    with pytest.raises(ValueError, match="marker"):
        render_document("# Settings\n")


def test_the_generator_checks_and_rewrites(tmp_path: Path) -> None:
    stale = tmp_path / "settings.md"
    stale.write_text(f"# Settings\n\n{BEGIN}\n| old |\n{END}\n\nprose stays\n")
    command = [sys.executable, "-m", "onerun.settings.doc", "--path", str(stale)]
    check = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=PROJECT,
                           timeout=60, check=False)
    assert check.returncode == 1 and "python -m onerun.settings.doc" in check.stderr
    subprocess.run(command, capture_output=True, cwd=PROJECT, timeout=60, check=True)
    rewritten = stale.read_text()
    assert render_table() in rewritten and "| old |" not in rewritten
    assert rewritten.endswith(f"{END}\n\nprose stays\n")
    again = subprocess.run([*command, "--check"], cwd=PROJECT, timeout=60, check=False)
    assert again.returncode == 0


def test_the_readme_lists_only_declared_settings_each_once() -> None:
    """The README's short table is kept by hand: it may leave settings out, but it must
    name no variable onerun does not read and no variable twice."""
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines()
            if line.startswith("| `")]
    named = [name for cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)]
    declared = {declaration.name for declaration in SETTINGS}
    assert [name for name in named if name not in declared] == []
    assert sorted({name for name in named if named.count(name) > 1}) == []
