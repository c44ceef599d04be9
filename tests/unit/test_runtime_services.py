"""The program catalogue: what runs, in which order, with which command and environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from testlib import write_image_versions

from onerun.catalogue import INSTALLED_BY
from onerun.layout import Layout
from onerun.runtime.services import plan_programs, service_auth_files
from onerun.runtime.supervisor import stop_budget_seconds
from onerun.settings import load_settings


def _install(root: Path, *names: str) -> None:
    for name in names:
        path = root / INSTALLED_BY[name].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def _plan(root: Path, environ: dict[str, str] | None = None, **kwargs: object) -> list:
    settings = load_settings(environ or {}, root=str(root))
    options = {"maintenance": False, "heal_service_auth": False, "record_start": None, **kwargs}
    return plan_programs(settings, Layout.from_env(root), **options)  # type: ignore[arg-type]


def test_only_installed_and_enabled_services_run(tmp_path: Path) -> None:
    _install(tmp_path, "oned", "fireedge", "oneflow")
    assert [p.name for p in _plan(tmp_path)] == [
        "onerun-logs", "oned", "fireedge", "oneflow", "onerun-post-start"]
    only = _plan(tmp_path, {"ONERUN_SERVICES": "oned,oneflow"})
    assert [p.name for p in only if not p.name.startswith("onerun")] == ["oned", "oneflow"]


def test_maintenance_runs_no_opennebula_service(tmp_path: Path) -> None:
    _install(tmp_path, *INSTALLED_BY)
    assert [p.name for p in _plan(tmp_path, maintenance=True)] == ["onerun-logs"]


def test_commands_environment_and_waits(tmp_path: Path) -> None:
    _install(tmp_path, *INSTALLED_BY)
    programs = {p.name: p for p in _plan(tmp_path, heal_service_auth=True,
                                         record_start=("7.4.0", None))}
    oned = programs["oned"]
    assert oned.command == [str(tmp_path / "usr/bin/oned"), "-f"]
    assert oned.environment["PATH"].startswith(f"{tmp_path}/usr/lib/one/sh/override:")
    assert oned.environment["SSH_AUTH_SOCK"] == str(tmp_path / "run/one/ssh-agent.sock")
    assert oned.critical and not oned.autorestart and oned.stopwaitsecs >= 20
    agent = programs["ssh-agent"]
    assert agent.critical and not agent.autorestart and agent.startretries == 0
    # The agent itself is the program (no resident wrapper); a one-shot loads the keys.
    assert agent.command == [str(tmp_path / "usr/bin/ssh-agent"), "-D", "-a",
                             str(tmp_path / "run/one/ssh-agent.sock")]
    ssh_add = programs["onerun-ssh-add"]
    assert ssh_add.command[-1] == "ssh-add" and not ssh_add.autorestart
    assert not ssh_add.critical and agent.priority < ssh_add.priority < oned.priority
    for name in ("hem", "fireedge", "guacd", "oneflow", "onegate", "oneform", "oneks"):
        assert not programs[name].critical and programs[name].autorestart
    for program in programs.values():
        assert program.environment["HOME"] == str(tmp_path / "var/lib/one")
        assert program.environment["ONE_AUTH"] == str(tmp_path / "var/lib/one/.one/one_auth")
    hem = programs["hem"].command
    assert hem[hem.index("wait-oned") + 1] == "--"
    assert hem[-2:] == [str(tmp_path / "usr/bin/ruby"),
                        str(tmp_path / "usr/lib/one/onehem/onehem-server.rb")]
    fireedge = programs["fireedge"].command
    sunstone_auth = str(tmp_path / "var/lib/one/.one/sunstone_auth")
    assert fireedge[fireedge.index("--file") + 1] == sunstone_auth
    assert programs["guacd"].environment["LD_LIBRARY_PATH"] == str(
        tmp_path / "usr/share/one/guacd/lib")
    guacd = programs["guacd"].command
    assert "wait-oned" not in guacd  # FireEdge needs guacd, guacd needs nothing
    # Loopback only: guacd obeys any connect instruction, unauthenticated; FireEdge in
    # the same container reaches it at localhost.
    assert guacd[guacd.index("-b") + 1] == "127.0.0.1"
    post = programs["onerun-post-start"].command
    assert post[-4:] == ["--heal-service-auth", "--record-start", "7.4.0", ""]
    assert {p.name for p in programs.values() if p.critical} == {
        "oned", "ssh-agent", "onerun-post-start"}


def test_stop_order_services_first_oned_last_within_the_chart_budget(tmp_path: Path) -> None:
    _install(tmp_path, *INSTALLED_BY)
    programs = _plan(tmp_path, heal_service_auth=True, record_start=("7.4.0", "7.4.0"))
    stop_order = [p.name for p in sorted(programs, key=lambda p: -p.priority)]
    assert stop_order.index("oned") > max(stop_order.index(n) for n in (
        "hem", "fireedge", "guacd", "oneflow", "onegate", "oneform", "oneks"))
    assert stop_order[-1] == "onerun-logs"  # it prints oned's last lines
    assert stop_budget_seconds(programs) <= 60  # the chart's stop budget (docs/processes.md)


def test_post_start_records_the_key_fingerprint_when_the_policy_asks(tmp_path: Path) -> None:
    _install(tmp_path, "oned")
    asked = {p.name: p for p in _plan(tmp_path, record_key_fingerprint=True)}
    assert "--record-key-fingerprint" in asked["onerun-post-start"].command
    plain = {p.name: p for p in _plan(tmp_path)}
    assert "--record-key-fingerprint" not in plain["onerun-post-start"].command


def test_no_oned_no_post_start(tmp_path: Path) -> None:
    _install(tmp_path, "fireedge")
    assert "onerun-post-start" not in [p.name for p in _plan(tmp_path)]


@pytest.mark.parametrize(("release", "expected"), [
    ("7.0.2", {"sunstone_auth", "onegate_auth", "oneflow_auth"}),
    ("7.2.0", {"sunstone_auth", "onegate_auth", "oneflow_auth", "oneform_auth"}),
    ("7.4.1", {"sunstone_auth", "onegate_auth", "oneflow_auth", "oneform_auth", "oneks_auth"}),
])
def test_service_auth_files_by_release(tmp_path: Path, release: str, expected: set[str]) -> None:
    write_image_versions(tmp_path, release, release)
    assert set(service_auth_files(Layout(tmp_path))) == expected


def test_service_auth_files_from_installed_services_when_release_unknown(tmp_path: Path) -> None:
    _install(tmp_path, "oneform")
    assert set(service_auth_files(Layout(tmp_path))) == {
        "sunstone_auth", "onegate_auth", "oneflow_auth", "oneform_auth"}
