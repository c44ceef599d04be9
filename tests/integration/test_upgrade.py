"""The upgrade transaction against real databases, with a stand-in ``onedb`` under the root.

The stand-in (R/usr/bin/onedb, plainly a test program) records its argv, environment and
uid, then does what the test says: write the target version rows (success), exit 0 without
migrating, half-migrate and fail (printing the password, as onedb's mysqldump error does),
damage onerun's backup first so that the restore fails too, or half-migrate and then take
one long step before succeeding (the tests signal onerun meanwhile). For MariaDB it logs in with
ONE_DB_PASSWORD, the interface onerun promises onedb.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from click.testing import CliRunner
from testlib import (
    DB_FIXTURES,
    ONEDB_STAND_IN,
    lay_out_etc_dist,
    require_shared,
    write_image_versions,
)

from onerun.backup import make_backup
from onerun.cli import cli
from onerun.database import classify
from onerun.entry import stop_on_signals
from onerun.errors import Interrupted, UnsafeStateError
from onerun.layout import Layout
from onerun.plan import ApplyContext, Plan, WriteFile
from onerun.settings import Settings, load_settings
from onerun.upgrade import UpgradeSchema

DB_PASSWORD = "Canary-DbPass-c0ffee"
ADMIN_PASSWORD = "fixturepass"  # the fixtures' one_auth
SQLITE_FIXTURE = DB_FIXTURES / "sqlite-bootstrapped" / "one.db"
MARIADB_DUMP = DB_FIXTURES / "mariadb-bootstrapped" / "opennebula.sql"


@dataclass
class Upgrade:
    """One prepared root: its layout, settings, and what the stand-in recorded."""

    root: Path
    layout: Layout
    settings: Settings
    record: Path
    conf: Path
    lines: list[str] = field(default_factory=list)  # what onerun logged

    def stand_in(self, mode: str, target: str = "7.4.0", sleep: float = 0) -> None:
        self.conf.write_text(json.dumps({
            "mode": mode, "target": target, "sleep": sleep, "record": str(self.record),
            "marker": str(self.layout.restore_failed_marker),
            "backups": str(self.layout.backups),
            "pymysql_path": str(Path(pymysql.__file__).resolve().parent.parent),
        }))
        self.conf.chmod(0o644)

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def run(self, *later: WriteFile) -> list[str]:
        """Apply a plan of the upgrade followed by ``later`` actions; return the log lines."""
        account = self.layout.oneadmin
        plan = Plan(actions=[UpgradeSchema(self.settings, self.layout, "7.0.0", "7.4.0"),
                             *later])
        plan.apply(ApplyContext(self.layout, account.uid, account.gid, self.lines.append))
        return self.lines


def chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    for directory, _, files in os.walk(path):
        os.chown(directory, 9869, 9869)
        for name in files:
            os.chown(os.path.join(directory, name), 9869, 9869)


@pytest.fixture
def prepared(request: pytest.FixtureRequest) -> Iterator[Callable[[Settings | None], Upgrade]]:
    """Build roots that oneadmin can use (pytest's tmp_path is root-only)."""
    if os.geteuid() == 0:
        request.getfixturevalue("oneadmin_user")
    base = Path(tempfile.mkdtemp(prefix="onerun-upgrade-"))
    base.chmod(0o755)

    def build(settings: Settings | None = None) -> Upgrade:
        root = base / "root"
        layout = Layout(root)
        layout.dot_one.mkdir(parents=True)
        layout.one_auth.write_text(f"oneadmin:{ADMIN_PASSWORD}\n")
        layout.one_auth.chmod(0o600)
        if settings is None:
            shutil.copy(require_shared(SQLITE_FIXTURE), layout.sqlite_db)
            layout.sqlite_db.chmod(0o640)  # the fixture is read-only
            settings = load_settings({"ONEADMIN_PASSWORD": ADMIN_PASSWORD}, root=root)
        chown_tree(layout.var_lib_one)
        onedb = layout.binary("/usr/bin/onedb")
        onedb.parent.mkdir(parents=True)
        onedb.write_text(ONEDB_STAND_IN)
        onedb.chmod(0o755)
        record = base / "onedb-calls.jsonl"
        record.touch(mode=0o666)
        record.chmod(0o666)
        upgrade = Upgrade(root, layout, settings, record, onedb.with_name("onedb-standin.json"))
        upgrade.stand_in("succeed")
        return upgrade

    yield build
    shutil.rmtree(base, ignore_errors=True)


def sqlite_dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return list(db.iterdump())


def assert_secret_free(lines: list[str], calls: list[dict[str, Any]], *secrets: str) -> None:
    for secret in secrets:
        assert not any(secret in line for line in lines), "a secret reached the log"
        for call in calls:
            assert not any(secret in arg for arg in call["argv"]), "a secret reached argv"


# --- sqlite ---------------------------------------------------------------------------


def test_sqlite_upgrade_succeeds_and_runs_later_actions(prepared: Any) -> None:
    up = prepared()
    later = up.root / "run/onerun/supervisord.conf"

    lines = up.run(WriteFile(later, b"[supervisord]\n", 0o600, why="stands for the hand-off"))

    observed = classify(up.settings, up.layout)
    assert (observed.db_version, observed.local_db_version) == ("7.4.0", "7.4.0")
    assert later.exists()
    [call] = up.calls()
    assert call["argv"][1:] == ["upgrade", "--no-backup", "-s", str(up.layout.sqlite_db)]
    assert set(call["env"]) == {"HOME", "PATH", "LANG", "ONE_AUTH", "USER", "LOGNAME"}
    assert call["env"]["ONE_AUTH"] == str(up.layout.one_auth)
    assert call["marker"] is True  # an interrupted upgrade would be refused at next start
    if os.geteuid() == 0:
        assert call["uid"] == 9869  # onedb ran as oneadmin
    [backup] = list(up.layout.backups.iterdir())
    assert backup.name.endswith("-db7.0.0-to7.4.0.sqlite")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not up.layout.restore_failed_marker.exists()
    assert any("upgraded the database to 7.4.0" in line for line in lines)


@pytest.mark.parametrize("mode", ["fail", "noop"])
def test_sqlite_failed_upgrade_restores_and_never_reaches_oned(prepared: Any, mode: str,
                                                               capfd: Any) -> None:
    up = prepared()
    up.stand_in(mode)
    before = sqlite_dump(up.layout.sqlite_db)
    later = up.root / "run/onerun/supervisord.conf"

    with pytest.raises(UnsafeStateError) as caught:
        up.run(WriteFile(later, b"[supervisord]\n", 0o600, why="the hand-off"))

    error = caught.value
    assert error.exit_code == 3
    assert not later.exists()  # the pipeline stopped before anything after the upgrade
    assert sqlite_dump(up.layout.sqlite_db) == before  # half-migration undone
    [backup] = list(up.layout.backups.iterdir())
    assert str(backup) in str(error) and "next start retries" in str(error)
    assert not up.layout.restore_failed_marker.exists()
    if mode == "noop":
        assert "DB version is 7.0.0, not 7.4.0" in error.reason
    else:
        assert "onedb upgrade exited 1" in error.reason
    out, err = capfd.readouterr()
    assert any(line.startswith("  onedb: ") for line in up.lines)
    assert_secret_free([*up.lines, str(error), out, err], up.calls(), ADMIN_PASSWORD)


def test_sqlite_failure_logs_the_last_lines_masked(prepared: Any) -> None:
    up = prepared()
    up.stand_in("fail")
    lines: list[str] = []
    account = up.layout.oneadmin
    ctx = ApplyContext(up.layout, account.uid, account.gid, lines.append)
    with pytest.raises(UnsafeStateError):
        UpgradeSchema(up.settings, up.layout, "7.0.0", "7.4.0").apply(ctx)
    onedb_lines = [line for line in lines if line.startswith("  onedb: ")]
    assert len(onedb_lines) == 20
    assert onedb_lines[-1] == "  onedb: Unknown error running 'mysqldump -u oneadmin -p***'"
    assert_secret_free(lines, up.calls(), ADMIN_PASSWORD)


def test_restore_failure_writes_the_marker(prepared: Any) -> None:
    up = prepared()
    up.stand_in("damage-backup")
    with pytest.raises(UnsafeStateError) as caught:
        up.run()
    marker = up.layout.restore_failed_marker
    data = json.loads(marker.read_text())
    [backup] = list(up.layout.backups.iterdir())
    assert data["backup"] == str(backup) and data["time"]
    assert "restoring the backup failed" in data["reason"]
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert f"onerun restore {backup}" in caught.value.fix
    assert ADMIN_PASSWORD not in marker.read_text() + str(caught.value)


def test_no_backup_no_upgrade(prepared: Any) -> None:
    up = prepared()
    before = sqlite_dump(up.layout.sqlite_db)
    up.layout.backups.write_text("a file where the backup directory belongs")
    with pytest.raises(UnsafeStateError, match="could not back up") as caught:
        up.run()
    assert "nothing was changed" in str(caught.value)
    assert up.calls() == []  # onedb never ran
    assert sqlite_dump(up.layout.sqlite_db) == before


# --- MariaDB --------------------------------------------------------------------------


def mariadb_upgrade(prepared: Any, server: Any, name: str,
                    extra: dict[str, str] | None = None) -> Upgrade:
    server.create_database(name, "oneadmin", DB_PASSWORD)
    server.load_dump(name, require_shared(MARIADB_DUMP))
    up: Upgrade = prepared(load_settings({"DB_BACKEND": "mysql", "DB_HOST": server.host,
                                          "DB_PORT": str(server.port), "DB_USER": "oneadmin",
                                          "DB_PASSWORD": DB_PASSWORD, "DB_NAME": name,
                                          "ONEADMIN_PASSWORD": ADMIN_PASSWORD, **(extra or {})}))
    return up


def mysql_snapshot(server: Any, name: str) -> dict[str, Any]:
    connection = server.connect(name)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables"
                           " WHERE table_schema=%s", (name,))
            tables = sorted(str(row[0]) for row in cursor.fetchall())
            cursor.execute(f"CHECKSUM TABLE {', '.join(f'`{t}`' for t in tables)} EXTENDED")
            return {str(row[0]): row[1] for row in cursor.fetchall()}
    finally:
        connection.close()


@pytest.mark.mariadb
def test_mariadb_upgrade_passes_the_password_only_through_the_environment(
        prepared: Any, mariadb_server: Any, capfd: Any) -> None:
    up = mariadb_upgrade(prepared, mariadb_server, "upgrade_ok")
    lines = up.run()
    observed = classify(up.settings, up.layout)
    assert (observed.db_version, observed.local_db_version) == ("7.4.0", "7.4.0")
    [call] = up.calls()
    assert call["argv"][1:] == ["upgrade", "--no-backup", "-t", "mysql", "-S", "127.0.0.1",
                                "-P", str(mariadb_server.port), "-u", "oneadmin", "-d",
                                "upgrade_ok"]
    assert call["env"]["ONE_DB_PASSWORD"] == DB_PASSWORD  # and it logged in with it
    out, err = capfd.readouterr()
    assert_secret_free([*lines, out, err], up.calls(), DB_PASSWORD, ADMIN_PASSWORD)
    [backup] = list(up.layout.backups.iterdir())
    assert backup.name.endswith("-db7.0.0-to7.4.0.sql") and DB_PASSWORD not in backup.read_text()


@pytest.mark.mariadb
def test_mariadb_failed_upgrade_is_rolled_back(prepared: Any, mariadb_server: Any,
                                               capfd: Any) -> None:
    name = "upgrade_fail"
    up = mariadb_upgrade(prepared, mariadb_server, name)
    up.stand_in("fail")
    before = mysql_snapshot(mariadb_server, name)
    later = up.root / "run/onerun/supervisord.conf"
    with pytest.raises(UnsafeStateError) as caught:
        up.run(WriteFile(later, b"[supervisord]\n", 0o600, why="the hand-off"))
    assert caught.value.exit_code == 3 and not later.exists()
    assert mysql_snapshot(mariadb_server, name) == before  # group_vlans gone, user 1 back
    [backup] = list(up.layout.backups.iterdir())
    assert str(backup) in str(caught.value)
    out, err = capfd.readouterr()
    assert any("-p***" in line for line in up.lines)  # onedb printed it; the log masks it
    assert_secret_free([*up.lines, str(caught.value), out, err], up.calls(), DB_PASSWORD,
                       ADMIN_PASSWORD)


@pytest.mark.mariadb
def test_mariadb_restore_failure_writes_the_marker(prepared: Any, mariadb_server: Any) -> None:
    up = mariadb_upgrade(prepared, mariadb_server, "upgrade_restore_fails")
    up.stand_in("damage-backup")
    with pytest.raises(UnsafeStateError) as caught:
        up.run()
    assert "onerun restore" in caught.value.fix
    data = json.loads(up.layout.restore_failed_marker.read_text())
    assert "restoring the backup failed" in data["reason"]
    assert DB_PASSWORD not in up.layout.restore_failed_marker.read_text() + str(caught.value)


# --- backups: pruned only after a good upgrade, manual ones never ----------------------


def manual_backup(up: Upgrade, env: dict[str, str]) -> Path:
    """`onerun backup`, as an operator runs it in the pod; returns the file it printed."""
    made = CliRunner().invoke(cli, ["backup", "--root", str(up.root)],
                              env={"DB_BACKEND": None, "ONERUN_ROOT": None, **env})
    assert made.exit_code == 0, made.output
    return Path(made.stdout.strip().splitlines()[-1])


def backup_names(up: Upgrade) -> list[str]:
    return sorted(path.name for path in up.layout.backups.iterdir())


def failing_starts_delete_nothing(up: Upgrade, env: dict[str, str]) -> None:
    manual = manual_backup(up, env)
    up.stand_in("fail")
    for attempt in range(1, 4):
        with pytest.raises(UnsafeStateError):
            up.run()
        names = backup_names(up)
        assert manual.name in names  # the operator's backup survives every failed start
        assert len(names) == 1 + attempt, names  # and so does every earlier attempt's


def test_failed_upgrades_prune_no_backup(prepared: Any) -> None:
    up = prepared()
    env = {"ONEADMIN_PASSWORD": ADMIN_PASSWORD, "ONERUN_BACKUP_KEEP": "2"}
    up.settings = load_settings(env, root=up.root)
    failing_starts_delete_nothing(up, env)


@pytest.mark.mariadb
def test_mariadb_failed_upgrades_prune_no_backup(prepared: Any, mariadb_server: Any) -> None:
    up = mariadb_upgrade(prepared, mariadb_server, "upgrade_prune", {"ONERUN_BACKUP_KEEP": "2"})
    env = {"DB_BACKEND": "mysql", "DB_HOST": mariadb_server.host,
           "DB_PORT": str(mariadb_server.port), "DB_USER": "oneadmin",
           "DB_PASSWORD": DB_PASSWORD, "DB_NAME": "upgrade_prune", "ONERUN_BACKUP_KEEP": "2"}
    failing_starts_delete_nothing(up, env)


def test_a_good_upgrade_prunes_only_the_automatic_backups(prepared: Any) -> None:
    up = prepared()
    env = {"ONEADMIN_PASSWORD": ADMIN_PASSWORD, "ONERUN_BACKUP_KEEP": "2"}
    up.settings = load_settings(env, root=up.root)
    manual = [manual_backup(up, env) for _ in range(2)]
    earlier = [make_backup(up.settings, up.layout, db_version="6.10.0",
                           target_version="7.0.0", log=up.lines.append) for _ in range(2)]
    assert len(backup_names(up)) == 4

    lines = up.run()

    [new] = [name for name in backup_names(up) if name.endswith("-db7.0.0-to7.4.0.sqlite")]
    assert backup_names(up) == sorted([*(p.name for p in manual), earlier[1].name, new])
    assert any(f"removed old backup {earlier[0]}" in line and "ONERUN_BACKUP_KEEP=2" in line
               for line in lines)


# --- SIGTERM while onedb runs -----------------------------------------------------------


def image_over_volume(up: Upgrade) -> None:
    """Make up.root a 7.4.0 image over the 7.0.0 volume, ready for a real `onerun start`."""
    lay_out_etc_dist(up.root, "7.4.0")
    write_image_versions(up.root, "7.4.0", "7.4.0")
    shutil.copy(require_shared(DB_FIXTURES / "sqlite-bootstrapped" / "dot-one" / "one_key"),
                up.layout.one_key)
    up.layout.one_key.chmod(0o600)
    chown_tree(up.layout.var_lib_one)


def start(up: Upgrade, *extra: str, env: dict[str, str] | None = None) -> Any:
    """The real `onerun start` as the image's ENTRYPOINT runs it (a subprocess)."""
    return subprocess.Popen(
        [sys.executable, "-m", "onerun", "start", "--root", str(up.root), *extra],
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ONEADMIN_PASSWORD": ADMIN_PASSWORD,
             **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def half_migrated(up: Upgrade, server: Any = None) -> bool:
    """The stand-in has changed the database (its long step comes next)."""
    if server is None:
        with closing(sqlite3.connect(f"file:{up.layout.sqlite_db}?mode=ro", uri=True)) as db:
            return bool(db.execute("SELECT 1 FROM sqlite_master WHERE name='group_vlans'")
                        .fetchall())
    connection = server.connect(up.settings.db_name)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM information_schema.tables WHERE table_schema=%s"
                           " AND table_name='group_vlans'", (up.settings.db_name,))
            return bool(cursor.fetchall())
    finally:
        connection.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_while_onedb_runs_lets_it_finish_then_stops_before_the_hand_off(
        prepared: Any) -> None:
    up = prepared()
    image_over_volume(up)
    up.stand_in("slow", sleep=3)
    process = start(up)
    wait_until(lambda: half_migrated(up), "the stand-in onedb to start migrating")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 143, err
    assert "stopped by SIGTERM during the schema upgrade" in err
    assert "upgrade finished" in err and "stopped before the hand-off" in err
    observed = classify(up.settings, up.layout)
    assert (observed.db_version, observed.local_db_version) == ("7.4.0", "7.4.0")
    assert not up.layout.restore_failed_marker.exists()
    assert not (up.root / "run/onerun/supervisord.conf").exists()  # supervisord never came
    [backup] = list(up.layout.backups.iterdir())
    assert str(backup) in err
    [call] = up.calls()
    assert not alive(call["pid"])
    # The next start goes on from here: nothing left to upgrade.
    dry = start(up, "--dry-run")
    out, _ = dry.communicate(timeout=60)
    assert dry.returncode == 0 and "upgrade-schema" not in out, out


def test_sigterm_past_the_grace_stops_onedb_and_restores(prepared: Any) -> None:
    up = prepared()
    image_over_volume(up)
    up.stand_in("slow", sleep=120)
    before = sqlite_dump(up.layout.sqlite_db)
    process = start(up, env={"ONERUN_UPGRADE_STOP_GRACE": "1"})
    wait_until(lambda: half_migrated(up), "the stand-in onedb to start migrating")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 143, err
    [backup] = list(up.layout.backups.iterdir())
    assert "stopped by SIGTERM during the schema upgrade" in err
    assert f"the database was restored from {backup}" in err
    assert "the next start upgrades again" in err
    assert "upgrade failed" not in err
    assert sqlite_dump(up.layout.sqlite_db) == before  # the half-migration is undone
    assert not up.layout.restore_failed_marker.exists()
    [call] = up.calls()
    assert not alive(call["pid"])  # onedb was stopped, not left migrating
    dry = start(up, "--dry-run")
    out, _ = dry.communicate(timeout=60)
    assert dry.returncode == 0 and "upgrade-schema" in out, out


@pytest.fixture
def onerun_signals() -> Iterator[None]:
    """SIGTERM/SIGINT handled as `onerun start` handles them (onerun/entry.py), then put back."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop_on_signals()
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def signal_when(condition: Callable[[], bool]) -> threading.Thread:
    """Send this process SIGTERM (as Kubernetes would) once ``condition`` holds."""

    def run() -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.mariadb
def test_mariadb_second_sigterm_does_not_cut_the_restore_short(
        prepared: Any, mariadb_server: Any, monkeypatch: pytest.MonkeyPatch,
        onerun_signals: None) -> None:
    name = "upgrade_sigterm"
    up = mariadb_upgrade(prepared, mariadb_server, name, {"ONERUN_UPGRADE_STOP_GRACE": "1"})
    up.stand_in("slow", sleep=120)
    before = mysql_snapshot(mariadb_server, name)
    import onerun.upgrade

    real_restore = onerun.upgrade.restore_backup

    def restore_while_signalled(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the pod is deleted again during the restore
        real_restore(*args, **kwargs)

    monkeypatch.setattr(onerun.upgrade, "restore_backup", restore_while_signalled)
    signal_when(lambda: half_migrated(up, mariadb_server))

    with pytest.raises(Interrupted) as caught:
        up.run()

    assert caught.value.exit_code == 143
    [backup] = list(up.layout.backups.iterdir())
    assert f"the database was restored from {backup}" in str(caught.value)
    assert mysql_snapshot(mariadb_server, name) == before
    assert not up.layout.restore_failed_marker.exists()
    [call] = up.calls()
    assert not alive(call["pid"])
    assert_secret_free([*up.lines, str(caught.value)], up.calls(), DB_PASSWORD, ADMIN_PASSWORD)


@pytest.mark.mariadb
def test_mariadb_sigterm_during_the_backup_changes_nothing(
        prepared: Any, mariadb_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        onerun_signals: None) -> None:
    name = "upgrade_sigterm_backup"
    up = mariadb_upgrade(prepared, mariadb_server, name)
    before = mysql_snapshot(mariadb_server, name)
    started = tmp_path / "dump-started"
    real = shutil.which("mariadb-dump")
    assert real is not None
    slow = tmp_path / "bin" / "mariadb-dump"
    slow.parent.mkdir()
    slow.write_text(f"#!/bin/sh\n# test wrapper: a slow dump\ntouch {started}\nsleep 5\n"
                    f'exec {real} "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow.parent}:{os.environ['PATH']}")
    signal_when(started.exists)

    with pytest.raises(Interrupted) as caught:
        up.run()

    assert caught.value.exit_code == 143 and "SIGTERM" in str(caught.value)
    assert up.calls() == []  # onedb never ran
    assert list(up.layout.backups.iterdir()) == []  # no backup, no partial file
    assert not up.layout.restore_failed_marker.exists()
    assert mysql_snapshot(mariadb_server, name) == before
