"""The CLI as an operator meets it: ``python -m onerun`` in a clean environment.

Settings errors must exit 2, name every bad variable, print no secret and change nothing
under the root. ``render`` and ``start`` import their modules before reading settings, so
those tests skip while the module cannot be imported.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onerun import __version__

CANARY = "CANARY7f3b"


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m onerun ARGS`` with only PATH, HOME and ``env`` in its environment."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8",
             **env}
    return subprocess.run(
        [sys.executable, "-m", "onerun", *args],
        cwd=cwd, env=clean, capture_output=True, text=True, timeout=120, check=False,
    )


def require_module(name: str) -> None:
    """Skip when ``name`` cannot be imported yet (another part of the project owns it)."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not importable yet ({exc}); the command cannot run")


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*"))


def test_version(tmp_path: Path) -> None:
    result = run(["version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"onerun {__version__}\n"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_commands(tmp_path: Path, flag: str) -> None:
    result = run([flag], tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("version", "render", "start"):
        assert command in result.stdout


def test_console_script_matches_python_m(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("onerun")
    if not script.exists():
        pytest.skip(f"{script} is absent (package not installed into this interpreter)")
    result = subprocess.run([str(script), "version"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"onerun {__version__}\n"


COMMANDS = {
    "render": ("onerun.config.render", ["render"]),
    "start --dry-run": ("onerun.start", ["start", "--dry-run"]),
}


@pytest.fixture(params=sorted(COMMANDS))
def command(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[list[str], Path]:
    """A command that reads settings, with an empty root; skipped while its module is missing."""
    module, args = COMMANDS[request.param]
    require_module(module)
    root = tmp_path / "root"
    root.mkdir()
    return [*args, "--root", str(root)], root


def test_quote_in_db_password_exits_2_without_the_secret(
    command: tuple[list[str], Path], tmp_path: Path
) -> None:
    args, root = command
    result = run(args, tmp_path, DB_BACKEND="mysql", DB_HOST="db", DB_PASSWORD='a"b')
    assert result.returncode == 2, result.stderr
    assert "DB_PASSWORD" in result.stderr
    assert 'a"b' not in result.stdout + result.stderr
    assert files_under(root) == []


def test_every_bad_variable_is_named(command: tuple[list[str], Path], tmp_path: Path) -> None:
    args, root = command
    result = run(args, tmp_path, DB_PASSWORD=f"{CANARY} x", ONEADMIN_PASSWORD=f"{CANARY}'",
                 DB_PORT="65536", ONERUN_SERVICES="fireedge")
    assert result.returncode == 2, result.stderr
    for name in ("DB_PASSWORD", "ONEADMIN_PASSWORD", "DB_PORT", "ONERUN_SERVICES"):
        assert name in result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert files_under(root) == []


def test_secret_from_file_is_not_printed(command: tuple[list[str], Path], tmp_path: Path) -> None:
    args, root = command
    secret = tmp_path / "db_password"
    secret.write_text(f'{CANARY}"quoted\n')
    result = run(args, tmp_path, DB_PASSWORD_FILE=str(secret))
    assert result.returncode == 2, result.stderr
    assert "DB_PASSWORD" in result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert files_under(root) == []


def test_settings_error_as_json(command: tuple[list[str], Path], tmp_path: Path) -> None:
    args, _ = command
    result = run(args, tmp_path, ONERUN_LOG_FORMAT="json", ONE_KEY=CANARY, DB_NAME="123")
    assert result.returncode == 2, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    errors = [record for record in records if record["level"] == "error"]
    assert len(errors) == 1
    assert "ONE_KEY" in errors[0]["msg"] and "DB_NAME" in errors[0]["msg"]
    assert CANARY not in result.stderr


def test_bad_log_format_is_reported_in_text(command: tuple[list[str], Path],
                                            tmp_path: Path) -> None:
    args, _ = command
    result = run(args, tmp_path, ONERUN_LOG_FORMAT="xml")
    assert result.returncode == 2, result.stderr
    assert "ONERUN_LOG_FORMAT" in result.stderr


def test_probe_is_listed_in_help_and_works_through_click_too(tmp_path: Path) -> None:
    """`onerun probe` skips click for speed (onerun/entry.py), but --help lists it and the
    click command gives the same verdict."""
    from click.testing import CliRunner

    from onerun.cli import cli

    assert "probe" in CliRunner().invoke(cli, ["--help"]).output
    result = CliRunner().invoke(cli, ["probe", "startup", "--root", str(tmp_path),
                                      "--timeout", "0.2"])
    assert result.exit_code == 1
    assert result.output.startswith("not started: cannot read credentials")
