"""Observation of a throwaway root: the volume's files, the image, processes, the database.

The ~/.one files and one.db come from a real oned 7.0.0 (../shared fixtures; skipped
where absent). Nothing observed may be changed, which the tests check where it matters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testlib import DB_FIXTURES, require_shared, write_image_versions

from onerun import observe as observe_module
from onerun.database import DbState
from onerun.layout import Layout
from onerun.marker import write_start_record
from onerun.observe import (
    HostnameFact,
    observe,
    observe_hostname,
    observe_image,
    observe_processes,
    observe_volume,
    stat_path,
)
from onerun.settings import load_settings
from onerun.versions import Version

BOOTSTRAPPED = DB_FIXTURES / "sqlite-bootstrapped"


def _install_dot_one(layout: Layout) -> Path:
    source = require_shared(BOOTSTRAPPED / "dot-one")
    shutil.copytree(source, layout.dot_one)
    for path in (layout.dot_one, *layout.dot_one.iterdir()):
        path.chmod(0o700 if path.is_dir() else 0o600)  # the fixtures are read-only copies
    return source


def test_empty_volume(tmp_path: Path) -> None:
    facts = observe_volume(Layout(tmp_path))
    assert not facts.var_lib_one.exists
    assert facts.one_key is None
    assert not facts.one_auth_present
    assert facts.one_auth_password is None
    assert facts.service_auth == {}
    assert facts.secret_files == ()
    assert facts.start_record is None
    assert not facts.bootstrap_started
    assert facts.datastores_with_content == ()
    assert facts.restore_failed is None
    assert not facts.remotes_present
    assert not facts.ssh_private_key_present
    assert not facts.ssh_config_present


def test_dot_one_written_by_oned(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    source = _install_dot_one(layout)
    facts = observe_volume(layout)
    assert facts.one_key is not None
    assert facts.one_key.reveal() == (source / "one_key").read_text().split()[0]
    assert facts.one_auth_present
    assert facts.one_auth_password is not None
    assert facts.one_auth_password.reveal() == "fixturepass"
    assert set(facts.service_auth) == {"sunstone_auth", "onegate_auth", "oneflow_auth"}
    assert {fact.path.name for fact in facts.secret_files} == {
        "one_key", "one_auth", "sunstone_auth", "onegate_auth", "oneflow_auth"}
    assert all(fact.mode == 0o600 for fact in facts.secret_files)
    assert "fixturepass" not in repr(facts)  # secrets stay masked in any printout
    assert facts.var_lib_one.exists
    assert facts.var_lib_one.mode == (layout.var_lib_one.stat().st_mode & 0o7777)
    # serveradmin's secret, as oned wrote it into every service auth file
    # serveradmin's secret, as oned wrote it into every service auth file
    assert facts.service_auth["oneflow_auth"].reveal() == (source / "oneflow_auth").read_text()
    assert facts.service_auth["oneflow_auth"].reveal().startswith("serveradmin:")


def test_one_key_is_the_first_token_and_one_auth_needs_a_colon(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.dot_one.mkdir(parents=True)
    layout.one_key.write_text("  abcdef0123456789abcdef0123456789 trailing words\nsecond line\n")
    layout.one_auth.write_text("oneadmin-without-password\noneadmin:second-line\n")
    facts = observe_volume(layout)
    assert facts.one_key is not None
    assert facts.one_key.reveal() == "abcdef0123456789abcdef0123456789"
    assert facts.one_auth_present
    assert facts.one_auth_password is None


def test_empty_files_are_present_but_empty(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.dot_one.mkdir(parents=True)
    layout.one_key.write_text("")
    layout.one_auth.write_text("")
    facts = observe_volume(layout)
    assert facts.one_key is not None
    assert facts.one_key.reveal() == ""
    assert facts.one_auth_present
    assert facts.one_auth_password is None


def test_start_record_and_restore_failed_reason(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_start_record(layout.volume_marker, "7.0.2", "7.0.0", os.getuid(), os.getgid())
    layout.restore_failed_marker.write_text(json.dumps({
        "backup": "/var/lib/one/backups/one-7.0.0.sql.gz", "time": "2025-01-01T00:00:00+00:00",
        "reason": "onedb upgrade failed and the restore failed too"}))
    facts = observe_volume(layout)
    assert facts.start_record is not None
    assert facts.start_record.opennebula_version == "7.0.2"
    assert facts.restore_failed == (
        "onedb upgrade failed and the restore failed too"
        " (backup: /var/lib/one/backups/one-7.0.0.sql.gz)")


def test_datastores_with_content_and_the_bootstrap_record(tmp_path: Path) -> None:
    """Empty datastore directories are what a new cloud has; anything inside is a trace."""
    layout = Layout(tmp_path)
    assert observe_volume(layout).datastores_with_content == ()
    for name in ("0", "1", "2", "100"):
        (layout.datastores / name).mkdir(parents=True)
    (layout.datastores / "1" / "5e1f0c2a9b").write_bytes(b"image")
    elsewhere = tmp_path / "nfs-export"
    (elsewhere / "disk.0").mkdir(parents=True)
    (layout.datastores / "100").rmdir()
    (layout.datastores / "100").symlink_to(elsewhere)  # a datastore on a mount, via a link
    (layout.datastores / "README").write_text("a file, not a datastore")
    facts = observe_volume(layout)
    assert facts.datastores_with_content == ("1", "100")
    assert not facts.bootstrap_started
    layout.state_dir.mkdir(parents=True)
    layout.bootstrap_marker.write_text("")
    assert observe_volume(layout).bootstrap_started


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_unreadable_restore_marker_still_counts(tmp_path: Path, text: str) -> None:
    layout = Layout(tmp_path)
    layout.state_dir.mkdir(parents=True)
    layout.restore_failed_marker.write_text(text)
    assert observe_volume(layout).restore_failed == (
        f"{layout.restore_failed_marker} exists but is unreadable")


def test_remotes_and_ssh_facts(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.remotes.mkdir(parents=True)
    layout.ssh_dir.mkdir(parents=True)
    (layout.ssh_dir / "id_ed25519.pub").write_text("ssh-ed25519 AAAA\n")
    facts = observe_volume(layout)
    assert facts.remotes_present
    assert facts.remotes_stamp is None  # not copied by onerun (no stamp)
    (layout.remotes / ".onerun-release").write_text("7.4.0+0123456789abcdef\n")
    assert observe_volume(layout).remotes_stamp == "7.4.0+0123456789abcdef"
    assert not facts.ssh_private_key_present  # a public key alone is no identity
    assert not facts.ssh_config_present
    (layout.ssh_dir / "id_ecdsa").write_text("PRIVATE")
    (layout.ssh_dir / "config").write_text("Host *\n")
    facts = observe_volume(layout)
    assert facts.ssh_private_key_present
    assert facts.ssh_config_present


def test_stat_path(tmp_path: Path) -> None:
    missing = stat_path(tmp_path / "absent")
    assert (missing.exists, missing.uid, missing.mode) == (False, None, None)
    present = tmp_path / "file"
    present.write_text("")
    present.chmod(0o640)
    fact = stat_path(present)
    assert fact.exists
    assert (fact.uid, fact.gid, fact.mode) == (os.getuid(), os.getgid(), 0o640)


def test_image_without_version_files(tmp_path: Path) -> None:
    facts = observe_image(Layout(tmp_path))
    assert facts.versions.release is None
    assert facts.versions.db_version is None
    assert facts.remotes_dist_stamp is None
    assert not facts.ssh_config_dist_present


def test_image_with_version_files_and_dist_copies(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_image_versions(tmp_path, "7.0.2", "7.0.0")
    layout.remotes_dist.mkdir(parents=True)
    layout.ssh_config_dist.parent.mkdir(parents=True)
    layout.ssh_config_dist.write_text("Host *\n")
    facts = observe_image(layout)
    assert facts.versions.release == Version.parse("7.0.2")
    assert facts.versions.db_version == Version.parse("7.0.0")
    assert facts.remotes_dist_stamp is not None
    assert facts.ssh_config_dist_present


def test_stale_lock_without_oned(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")
    facts = observe_processes(layout)
    assert facts.lock_file_present
    assert facts.oned_running is None
    assert layout.lock_file.exists()  # observing never removes it


def test_no_lock_no_oned(tmp_path: Path) -> None:
    facts = observe_processes(Layout(tmp_path))
    assert not facts.lock_file_present
    assert facts.oned_running is None


def test_lock_naming_a_live_process(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.lock_dir.mkdir(parents=True)
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            layout.lock_file.write_text(f"{other.pid}\n")
            reason = observe_processes(layout).oned_running
            assert reason is not None
            assert str(other.pid) in reason
        finally:
            other.kill()


def test_lock_naming_this_very_process_is_stale(tmp_path: Path) -> None:
    """A new container reuses low pids: a pid in an old lock may be onerun's own."""
    layout = Layout(tmp_path)
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text(f"{os.getpid()}\n")
    assert observe_processes(layout).oned_running is None


@pytest.fixture
def stand_in_oned(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for oned (a Python script that sleeps) run from the root's /usr/bin/oned."""
    binary = Layout(tmp_path).binary("/usr/bin/oned")
    binary.parent.mkdir(parents=True)
    binary.write_text("import time\ntime.sleep(30)\n")
    process = subprocess.Popen([sys.executable, str(binary)])
    yield process
    process.kill()
    process.wait()


def test_lock_with_the_roots_oned_running(tmp_path: Path,
                                          stand_in_oned: subprocess.Popen[bytes]) -> None:
    layout = Layout(tmp_path)
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")
    reason = observe_processes(layout).oned_running
    assert reason is not None
    assert str(stand_in_oned.pid) in reason


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root branch of the writable fact")
def test_root_can_always_make_the_volume_writable(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.var_lib_one.mkdir(parents=True)
    layout.var_lib_one.chmod(0o500)
    facts = observe_processes(layout)
    assert facts.running_as_root
    assert facts.var_lib_one_writable_by_oneadmin


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere; needs a plain user")
def test_read_only_volume_is_reported_for_a_plain_user(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.var_lib_one.mkdir(parents=True)
    layout.var_lib_one.chmod(0o500)
    facts = observe_processes(layout)
    assert not facts.running_as_root
    assert not facts.var_lib_one_writable_by_oneadmin


def test_observe_end_to_end_on_sqlite(tmp_path: Path) -> None:
    db = require_shared(BOOTSTRAPPED / "one.db")
    layout = Layout(tmp_path)
    _install_dot_one(layout)
    shutil.copyfile(db, layout.sqlite_db)
    write_image_versions(tmp_path, "7.0.2", "7.0.0")
    before = hashlib.sha256(layout.sqlite_db.read_bytes()).hexdigest()
    lines: list[str] = []
    obs = observe(load_settings({}, root=tmp_path), layout, lines.append)
    assert obs.db.state is DbState.BOOTSTRAPPED
    assert (obs.db.db_version, obs.db.local_db_version) == ("7.0.0", "7.0.0")
    assert obs.db.oneadmin_password_sha256 == hashlib.sha256(b"fixturepass").hexdigest()
    assert obs.volume.one_auth_password is not None
    assert obs.image.versions.release == Version.parse("7.0.2")
    assert obs.processes.oned_running is None
    assert hashlib.sha256(layout.sqlite_db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in layout.var_lib_one.iterdir()) == [".one", "one.db"]


def test_observe_end_to_end_without_a_database(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    obs = observe(load_settings({}, root=tmp_path), layout, lambda _line: None)
    assert obs.db.state is DbState.EMPTY
    assert not layout.sqlite_db.exists()  # observing must not create one.db


# --- the hostname oned resolves at start -------------------------------------------------


def _unresolvable(name: str) -> str:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_unresolvable_system_hostname_is_observed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe_module.socket, "gethostname", lambda: "pod-0.invalid")
    monkeypatch.setattr(observe_module, "resolve_canonical", _unresolvable)
    fact = observe_hostname(load_settings({}), Layout(tmp_path))
    assert fact == HostnameFact(None, "pod-0.invalid", None, "Name or service not known")


def test_the_system_hostname_resolves_here(tmp_path: Path) -> None:
    fact = observe_hostname(load_settings({}), Layout(tmp_path))
    assert fact.configured is None and fact.error is None
    assert fact.system == socket.gethostname() and fact.canonical


@pytest.mark.parametrize(("env", "config", "packaged", "expected"), [
    ({"OPENNEBULA_HOSTNAME": "one.example"}, None, None, "one.example"),
    ({}, "oned: {hostname: from-config}\n", None, "from-config"),
    ({}, "oned: {HOSTNAME: ''}\n", 'HOSTNAME = "packaged"\n', None),  # emptied on purpose
    ({}, None, 'HOSTNAME = "packaged"\n', "packaged"),
    ({}, None, '# HOSTNAME = "one-hostname"\n', None),  # upstream ships it commented out
])
def test_configured_hostname_means_nothing_is_looked_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str], config: str | None, *, packaged: str | None,
        expected: str | None) -> None:
    monkeypatch.setattr(observe_module, "resolve_canonical", _unresolvable)
    if config is not None:
        (tmp_path / "onerun.yaml").write_text(config)
        env = {**env, "ONERUN_CONFIG": str(tmp_path / "onerun.yaml")}
    layout = Layout(tmp_path)
    if packaged is not None:
        layout.etc_dist.mkdir(parents=True)
        (layout.etc_dist / "oned.conf").write_text(packaged)
    fact = observe_hostname(load_settings(env), layout)
    assert fact.configured == expected
    assert (fact.error is None) == (expected is not None)
