"""Backups and restores on real databases: sqlite fixture copies and the private MariaDB.

Each round trip backs up a real OpenNebula 7.0.0 database, damages it the way a failed
migration would (rows deleted, a table dropped, a new table added), restores, and compares
every table with what it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from testlib import DB_FIXTURES, crash_inside_transaction, require_shared

from onerun.backup import (
    BACKUP_NAME,
    RestoreRefused,
    make_backup,
    restore_backup,
)
from onerun.cli import cli
from onerun.database.mysql_dump import DUMP_TRAILER, ONERUN_TRAILER
from onerun.layout import Layout
from onerun.settings import Settings, load_settings

DB_PASSWORD = "Canary-Db-Pass-93b1"
SQLITE_FIXTURE = DB_FIXTURES / "sqlite-bootstrapped" / "one.db"
MARIADB_DUMP = DB_FIXTURES / "mariadb-bootstrapped" / "opennebula.sql"


@pytest.fixture
def root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A throwaway root that oneadmin can enter (pytest's tmp_path is root-only)."""
    if os.geteuid() == 0:
        request.getfixturevalue("oneadmin_user")
    base = Path(tempfile.mkdtemp(prefix="onerun-backup-"))
    base.chmod(0o755)
    path = base / "root"
    (path / "var/lib/one/.one").mkdir(parents=True)
    yield path
    shutil.rmtree(base, ignore_errors=True)


def sqlite_root(root: Path) -> Layout:
    layout = Layout(root)
    shutil.copy(require_shared(SQLITE_FIXTURE), layout.sqlite_db)
    return layout


def sqlite_dump(path: Path) -> list[str]:
    """Every schema statement and row of an sqlite file, in a stable order."""
    with closing(sqlite3.connect(path)) as db:
        return list(db.iterdump())


def log_lines() -> tuple[list[str], Any]:
    lines: list[str] = []
    return lines, lines.append


# --- sqlite ---------------------------------------------------------------------------


def test_sqlite_round_trip(root: Path) -> None:
    layout = sqlite_root(root)
    settings = load_settings({}, root=root)
    before = sqlite_dump(layout.sqlite_db)
    lines, log = log_lines()

    backup = make_backup(settings, layout, db_version="7.0.0", target_version="7.4.0", log=log)

    assert backup.parent == layout.backups
    assert BACKUP_NAME.match(backup.name) and backup.name.endswith("-db7.0.0-to7.4.0.sqlite")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.backups.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert (backup.stat().st_uid, backup.stat().st_gid) == (9869, 9869)
    assert sqlite_dump(backup) == before
    assert not [p for p in layout.backups.iterdir() if p.name.startswith(".")]  # no leftovers

    with closing(sqlite3.connect(layout.sqlite_db)) as db:  # a half-done migration
        db.execute("DELETE FROM user_pool WHERE oid = 1")
        db.execute("DROP TABLE acl")
        db.execute("CREATE TABLE group_vlans (oid INTEGER PRIMARY KEY)")
        db.commit()
    assert sqlite_dump(layout.sqlite_db) != before

    restore_backup(settings, layout, backup, log)

    assert sqlite_dump(layout.sqlite_db) == before
    assert backup.exists()  # restoring keeps the backup
    assert any("restored the database" in line for line in lines)


def test_sqlite_backup_while_a_writer_holds_the_database(root: Path) -> None:
    """The backup API copies a consistent state while oned writes (uncommitted rows stay out)."""
    layout = sqlite_root(root)
    settings = load_settings({}, root=root)
    before = sqlite_dump(layout.sqlite_db)
    with closing(sqlite3.connect(layout.sqlite_db, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO hook_log (hkid, exeid, timestamp, body) "
                       "VALUES (999, 1, 0, 'uncommitted')")
        backup = make_backup(settings, layout, db_version="7.0.0", log=lambda _: None)
        writer.execute("ROLLBACK")
    assert backup.name.endswith("-db7.0.0.sqlite")
    assert sqlite_dump(backup) == before


def test_sqlite_backup_after_a_crash_inside_a_transaction(root: Path) -> None:
    """oned killed mid-write leaves a hot journal: the backup (onerun backup, and the one
    before an upgrade) keeps the crashed files aside, lets sqlite roll back, and copies the
    committed state."""
    layout = sqlite_root(root)
    settings = load_settings({}, root=root)
    before = sqlite_dump(layout.sqlite_db)
    journal = crash_inside_transaction(layout.sqlite_db)
    lines, log = log_lines()

    backup = make_backup(settings, layout, db_version="7.0.0", log=log)

    assert sqlite_dump(backup) == before
    assert sqlite_dump(layout.sqlite_db) == before
    kept = [p for p in layout.backups.iterdir() if p.name.startswith("one.db-crash-")]
    assert len(kept) == 1 and (kept[0] / "one.db-journal").read_bytes() == journal
    assert any(str(kept[0]) in line and "rolled back" in line for line in lines)


def test_pruning_keeps_the_newest_and_never_foreign_files(root: Path) -> None:
    layout = sqlite_root(root)
    layout.backups.mkdir(mode=0o700)
    foreign = layout.backups / "one.db_2026-01-01.bck"  # onedb's own backup name
    foreign.write_text("not ours")
    made = [cli_backup(root, ONERUN_BACKUP_KEEP_MANUAL="2") for _ in range(4)]
    assert len({p.name for p in made}) == 4  # unique names even within one second
    left = sorted(p.name for p in layout.backups.iterdir())
    assert left == sorted([foreign.name, made[2].name, made[3].name])


def test_restore_refuses_what_onerun_did_not_make(root: Path) -> None:
    layout = sqlite_root(root)
    settings = load_settings({}, root=root)
    before = sqlite_dump(layout.sqlite_db)
    backup = make_backup(settings, layout, db_version="7.0.0", log=lambda _: None)

    renamed = backup.with_name("one.db.bck")
    shutil.copy(backup, renamed)
    with pytest.raises(RestoreRefused, match="not named like a backup onerun made"):
        restore_backup(settings, layout, renamed, lambda _: None)

    damaged = backup.with_name(backup.name.replace("db7.0.0", "db6.0.0"))
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    with pytest.raises(RestoreRefused, match="integrity_check"):
        restore_backup(settings, layout, damaged, lambda _: None)

    mysql = load_settings({"DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1",
                           "DB_PASSWORD": DB_PASSWORD}, root=root)
    with pytest.raises(RestoreRefused, match="sqlite backup but DB_BACKEND is mysql"):
        restore_backup(mysql, layout, backup, lambda _: None)
    assert sqlite_dump(layout.sqlite_db) == before  # nothing changed


def test_backup_fails_cleanly_without_a_database(root: Path) -> None:
    from onerun.errors import BackupError

    layout = Layout(root)
    with pytest.raises(BackupError, match="nothing to back up"):
        make_backup(load_settings({}, root=root), layout, db_version="7.0.0",
                    log=lambda _: None)
    assert list(layout.backups.iterdir()) == []


# --- CLI ------------------------------------------------------------------------------


def test_cli_backup_and_restore(root: Path) -> None:
    layout = sqlite_root(root)
    before = sqlite_dump(layout.sqlite_db)
    runner = CliRunner()
    env = {"DB_BACKEND": None, "ONERUN_ROOT": None}

    made = runner.invoke(cli, ["backup", "--root", str(root)], env=env)
    assert made.exit_code == 0, made.output
    backup = Path(made.stdout.strip().splitlines()[-1])
    assert backup.parent == layout.backups and backup.name.endswith("-db7.0.0.sqlite")

    with closing(sqlite3.connect(layout.sqlite_db)) as db:
        db.execute("DELETE FROM user_pool")
        db.commit()
    layout.state_dir.mkdir(exist_ok=True)
    layout.restore_failed_marker.write_text("{}")

    # oned holds the lock: refused, nothing changed
    layout.lock_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        layout.lock_file.write_text(f"{holder.pid}\n")
        refused = runner.invoke(cli, ["restore", str(backup), "--root", str(root)], env=env)
    finally:
        holder.kill()
        holder.wait()
    assert refused.exit_code == 3, refused.output
    assert "oned may be running" in refused.output and "ONERUN_MAINTENANCE=1" in refused.output
    assert sqlite_dump(layout.sqlite_db) != before
    assert layout.restore_failed_marker.exists()

    # the holder is gone (a stale lock): restore runs and clears the marker
    restored = runner.invoke(cli, ["restore", str(backup), "--root", str(root)], env=env)
    assert restored.exit_code == 0, restored.output
    assert sqlite_dump(layout.sqlite_db) == before
    assert not layout.restore_failed_marker.exists()

    foreign = runner.invoke(cli, ["restore", str(layout.sqlite_db), "--root", str(root)],
                            env=env)
    assert foreign.exit_code == 3 and "not named like a backup" in foreign.output


def cli_env(root: Path, **extra: str) -> dict[str, str | None]:
    return {"DB_BACKEND": None, "ONERUN_ROOT": None, "ONERUN_LOG_FORMAT": None,
            "ONERUN_BACKUP_KEEP": None, "ONERUN_BACKUP_KEEP_MANUAL": None, **extra}


def cli_backup(root: Path, **env: str) -> Path:
    made = CliRunner().invoke(cli, ["backup", "--root", str(root)], env=cli_env(root, **env))
    assert made.exit_code == 0, made.output
    return Path(made.stdout.strip().splitlines()[-1])


def test_manual_backups_are_kept_apart_from_the_automatic_ones(root: Path) -> None:
    layout = sqlite_root(root)
    automatic = make_backup(load_settings({}, root=root), layout, db_version="7.0.0",
                            target_version="7.4.0", log=lambda _: None)

    # ONERUN_BACKUP_KEEP counts the automatic backups only: no manual one is pruned.
    manual = [cli_backup(root, ONERUN_BACKUP_KEEP="1") for _ in range(3)]
    assert sorted(p.name for p in layout.backups.iterdir()) == sorted(
        [automatic.name, *(p.name for p in manual)])

    # A documented setting prunes manual backups, and only those.
    runner = CliRunner()
    made = runner.invoke(cli, ["backup", "--root", str(root)],
                         env=cli_env(root, ONERUN_BACKUP_KEEP="1", ONERUN_BACKUP_KEEP_MANUAL="2"))
    assert made.exit_code == 0, made.output
    newest = Path(made.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in layout.backups.iterdir()) == sorted(
        [automatic.name, manual[2].name, newest.name])
    for old in manual[:2]:
        assert f"removed old backup {old}" in made.stderr
    assert "ONERUN_BACKUP_KEEP_MANUAL=2" in made.stderr


def test_backup_list_shows_kind_size_and_date(root: Path) -> None:
    layout = sqlite_root(root)
    runner = CliRunner()
    empty = runner.invoke(cli, ["backup", "--list", "--root", str(root)], env=cli_env(root))
    assert empty.exit_code == 0, empty.output
    assert f"no backups in {layout.backups}" in empty.stdout
    assert not layout.backups.exists()  # listing creates nothing

    automatic = make_backup(load_settings({}, root=root), layout, db_version="7.0.0",
                            target_version="7.4.0", log=lambda _: None)
    manual = cli_backup(root)
    (layout.backups / "one.db_2026-01-01.bck").write_text("onedb's own backup: not listed")

    table = runner.invoke(cli, ["backup", "--list", "--root", str(root)], env=cli_env(root))
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["KIND", "MADE", "(UTC)", "SIZE", "DB", "TO", "FILE"]
    size = f"{automatic.stat().st_size / 1024:.1f} KiB"
    made_at = f"{automatic.name.split('-')[1][:4]}-"  # the year, as the name has it
    [auto_line] = [line for line in lines if line.endswith(str(automatic))]
    assert auto_line.split()[0] == "upgrade" and size in auto_line and "7.4.0" in auto_line
    assert made_at in auto_line
    [manual_line] = [line for line in lines if line.endswith(str(manual))]
    assert manual_line.split()[0] == "manual"
    assert "bck" not in table.stdout
    assert "newest 5 (ONERUN_BACKUP_KEEP)" in table.stdout
    assert "all (ONERUN_BACKUP_KEEP_MANUAL" in table.stdout

    as_json = runner.invoke(cli, ["backup", "--list", "--root", str(root)],
                            env=cli_env(root, ONERUN_LOG_FORMAT="json"))
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)
    assert listed["directory"] == str(layout.backups)
    assert listed["keep"] == {"upgrade": 5, "manual": None}
    assert [entry["file"] for entry in listed["backups"]] == [str(automatic), str(manual)]
    first = listed["backups"][0]
    assert first["kind"] == "upgrade" and first["backend"] == "sqlite"
    assert first["size_bytes"] == automatic.stat().st_size
    assert (first["db_version"], first["target_version"]) == ("7.0.0", "7.4.0")
    assert first["made"].endswith("Z") and first["made"][:4] == made_at[:4]
    assert listed["backups"][1]["kind"] == "manual"
    assert listed["backups"][1]["target_version"] is None


# --- MariaDB --------------------------------------------------------------------------


def mysql_settings(server: Any, root: Path, name: str) -> Settings:
    return load_settings({"DB_BACKEND": "mysql", "DB_HOST": server.host,
                          "DB_PORT": str(server.port), "DB_USER": "oneadmin",
                          "DB_PASSWORD": DB_PASSWORD, "DB_NAME": name}, root=root)


def load_fixture(server: Any, name: str) -> None:
    server.create_database(name, "oneadmin", DB_PASSWORD)
    server.load_dump(name, require_shared(MARIADB_DUMP))


def mysql_snapshot(server: Any, name: str) -> dict[str, Any]:
    """Tables, their row counts and checksums, and the database's charset/collation."""
    connection = server.connect(name)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables"
                           " WHERE table_schema=%s ORDER BY table_name", (name,))
            tables = [str(row[0]) for row in cursor.fetchall()]
            snapshot: dict[str, Any] = {}
            for table in tables:
                cursor.execute(f"SELECT COUNT(*) FROM `{table}`")  # noqa: S608 - our table list
                count = cursor.fetchone()[0]
                cursor.execute(f"CHECKSUM TABLE `{table}` EXTENDED")
                snapshot[table] = (count, cursor.fetchone()[1])
            cursor.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM"
                           " information_schema.SCHEMATA WHERE SCHEMA_NAME=%s", (name,))
            snapshot["(schema)"] = cursor.fetchone()
    finally:
        connection.close()
    return snapshot


@pytest.fixture
def recorded_dump_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mariadb-dump and mariadb on PATH through wrappers that record their argv and env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.jsonl"
    for tool in ("mariadb-dump", "mariadb"):
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} is not installed (apt-get install -y mariadb-client)")
        wrapper = bin_dir / tool
        wrapper.write_text(
            f"#!{sys.executable}\n"
            "# test wrapper: records argv and environment, then runs the real tool\n"
            "import json, os, sys\n"
            f"with open({str(record)!r}, 'a') as f:\n"
            "    f.write(json.dumps({'argv': sys.argv, 'env': dict(os.environ)}) + '\\n')\n"
            f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n")
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return record


@pytest.mark.mariadb
def test_mariadb_round_trip(mariadb_server: Any, root: Path,
                            recorded_dump_tools: Path) -> None:
    name = "backup_round_trip"
    load_fixture(mariadb_server, name)
    settings = mysql_settings(mariadb_server, root, name)
    layout = Layout(root)
    before = mysql_snapshot(mariadb_server, name)
    assert before["user_pool"][0] == 2
    recorded_dump_tools.unlink(missing_ok=True)  # forget the fixture's own load

    backup = make_backup(settings, layout, db_version="7.0.0", target_version="7.4.0",
                         log=lambda _: None)

    assert backup.name.startswith("opennebula-") and backup.name.endswith("-to7.4.0.sql")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    text = backup.read_text()
    assert DUMP_TRAILER in text and DB_PASSWORD not in text
    assert "CREATE DATABASE" not in text  # restorable under any DB_NAME
    trailer = json.loads(text.strip().splitlines()[-1].removeprefix(ONERUN_TRAILER))
    assert trailer["database"] == name and trailer["db_version"] == "7.0.0"

    connection = mariadb_server.connect(name)
    with connection.cursor() as cursor:  # what a failed migration leaves behind
        cursor.execute("DELETE FROM user_pool WHERE oid = 1")
        cursor.execute("DROP TABLE acl")
        cursor.execute("CREATE TABLE group_vlans (oid INT PRIMARY KEY)")
    connection.close()
    assert mysql_snapshot(mariadb_server, name) != before

    restore_backup(settings, layout, backup, lambda _: None)

    assert mysql_snapshot(mariadb_server, name) == before
    calls = [json.loads(line) for line in recorded_dump_tools.read_text().splitlines()]
    assert [Path(call["argv"][0]).name for call in calls] == ["mariadb-dump", "mariadb"]
    for call in calls:
        assert not any(DB_PASSWORD in arg for arg in call["argv"])
        assert DB_PASSWORD not in json.dumps(call["env"])
        defaults = call["argv"][1]
        assert defaults.startswith("--defaults-file=")
        assert not Path(defaults.split("=", 1)[1]).exists()  # removed after use


@pytest.mark.mariadb
def test_mariadb_restore_refuses_a_dump_onerun_did_not_check(mariadb_server: Any,
                                                             root: Path) -> None:
    name = "backup_foreign"
    load_fixture(mariadb_server, name)
    settings = mysql_settings(mariadb_server, root, name)
    layout = Layout(root)
    before = mysql_snapshot(mariadb_server, name)
    layout.backups.mkdir(parents=True)
    # The upstream fixture dump is complete but was not made (and checked) by onerun.
    foreign = layout.backups / "opennebula-20260101T000000Z-db7.0.0.sql"
    shutil.copy(MARIADB_DUMP, foreign)
    with pytest.raises(RestoreRefused, match="lacks the trailer"):
        restore_backup(settings, layout, foreign, lambda _: None)

    backup = make_backup(settings, layout, db_version="7.0.0", log=lambda _: None)
    truncated = backup.with_name("opennebula-20260102T000000Z-db7.0.0.sql")
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    with pytest.raises(RestoreRefused, match="lacks the trailer"):
        restore_backup(settings, layout, truncated, lambda _: None)
    assert mysql_snapshot(mariadb_server, name) == before


@pytest.mark.mariadb
def test_mariadb_backup_failure_leaves_no_file(mariadb_server: Any, root: Path) -> None:
    from onerun.errors import BackupError

    name = "backup_missing"
    mariadb_server.drop_database(name)
    mariadb_server.create_database(name, "oneadmin", DB_PASSWORD)
    mariadb_server.drop_database(name)  # the user exists, its database does not
    layout = Layout(root)
    with pytest.raises(BackupError) as caught:
        make_backup(mysql_settings(mariadb_server, root, name), layout, db_version="7.0.0",
                    log=lambda _: None)
    assert DB_PASSWORD not in str(caught.value)
    assert list(layout.backups.iterdir()) == []


@pytest.mark.mariadb
def test_mariadb_backup_list(mariadb_server: Any, root: Path) -> None:
    name = "backup_list"
    load_fixture(mariadb_server, name)
    env = {"DB_BACKEND": "mysql", "DB_HOST": mariadb_server.host,
           "DB_PORT": str(mariadb_server.port), "DB_USER": "oneadmin",
           "DB_PASSWORD": DB_PASSWORD, "DB_NAME": name}
    manual = cli_backup(root, **env)
    assert manual.name.startswith("opennebula-") and manual.name.endswith("-db7.0.0.sql")
    listed = CliRunner().invoke(cli, ["backup", "--list", "--root", str(root)],
                                env=cli_env(root, ONERUN_LOG_FORMAT="json", **env))
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.stdout)["backups"]
    assert entry == {"file": str(manual), "kind": "manual", "backend": "mysql",
                     "made": entry["made"], "size_bytes": manual.stat().st_size,
                     "db_version": "7.0.0", "target_version": None}
    assert DB_PASSWORD not in listed.stdout + listed.stderr
