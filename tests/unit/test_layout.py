"""Layout: every path onerun touches derives from one root, so tests never leave it."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from onerun.catalogue import SERVICE_AUTH_FILES
from onerun.layout import ONEADMIN_FALLBACK_ID, Account, Layout


def _all_paths(layout: Layout) -> dict[str, Path]:
    """Every Path-valued property of the layout, found by introspection (new ones included)."""
    paths = {}
    for name, member in vars(Layout).items():
        if isinstance(member, property):
            value = getattr(layout, name)
            assert isinstance(value, Path), name
            paths[name] = value
    return paths


def test_every_path_lives_under_the_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    paths = _all_paths(layout)
    assert len(paths) > 20
    paths.update({f"service_auth({n})": layout.service_auth(n) for n in SERVICE_AUTH_FILES})
    paths["binary"] = layout.binary("/usr/bin/oned")
    for name, path in paths.items():
        assert path.is_relative_to(tmp_path), name
        assert path != tmp_path, name


def test_paths_are_the_container_paths_under_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.path("/etc/one") == tmp_path / "etc/one"
    assert layout.etc_dist == tmp_path / "usr/share/one/etc-dist"
    assert layout.one_auth == tmp_path / "var/lib/one/.one/one_auth"
    assert layout.sqlite_db == tmp_path / "var/lib/one/one.db"
    assert layout.lock_file == tmp_path / "var/lock/one/one"
    assert layout.supervisor_sock == tmp_path / "run/onerun/supervisor.sock"
    assert layout.service_auth("oneflow_auth") == tmp_path / "var/lib/one/.one/oneflow_auth"
    image = Layout()
    assert image.root == Path("/")
    assert image.one_key == Path("/var/lib/one/.one/one_key")
    assert image.binary("/usr/bin/oned") == Path("/usr/bin/oned")


def test_from_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = tmp_path / "env-root"
    argument = tmp_path / "arg-root"
    monkeypatch.delenv("ONERUN_ROOT", raising=False)
    assert Layout.from_env().root == Path("/")
    monkeypatch.setenv("ONERUN_ROOT", "")
    assert Layout.from_env().root == Path("/")
    monkeypatch.setenv("ONERUN_ROOT", str(from_env))
    assert Layout.from_env().root == from_env
    assert Layout.from_env(argument).root == argument
    assert Layout.from_env(str(argument)).root == argument


def test_from_env_resolves_a_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONERUN_ROOT", "demo")
    assert Layout.from_env().root == tmp_path.resolve() / "demo"


def test_oneadmin_from_passwd(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = pwd.struct_passwd(("oneadmin", "x", 1234, 5678, "", "/home/oneadmin", "/bin/sh"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry)
    assert Layout().oneadmin == Account("oneadmin", 1234, 5678, "/home/oneadmin")


def test_oneadmin_fallback_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", missing)
    account = Layout().oneadmin
    assert account == Account("oneadmin", ONEADMIN_FALLBACK_ID, ONEADMIN_FALLBACK_ID,
                               "/var/lib/one")
    assert ONEADMIN_FALLBACK_ID == 9869
