"""Backup names, pruning, masking, onedb's argv/environment, oned detection: no database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from onerun.backup import (
    backup_file_name,
    list_backups,
    mask,
    parse_backup_name,
    prune_backups,
)
from onerun.layout import Layout
from onerun.processes import oned_running
from onerun.settings import load_settings
from onerun.upgrade import (
    UpgradeSchema,
    describe_image_for_db,
    onedb_command,
    onedb_environment,
)

CANARY_DB = "Canary-DbPw-7f3a9"
CANARY_ADMIN = "Canary-AdminPw-51c2"


def mysql_settings(root: Path) -> object:
    return load_settings({"DB_BACKEND": "mysql", "DB_HOST": "db.example", "DB_PORT": "3307",
                          "DB_USER": "one", "DB_NAME": "cloud", "DB_PASSWORD": CANARY_DB,
                          "ONEADMIN_PASSWORD": CANARY_ADMIN}, root=root)


def test_backup_names_round_trip() -> None:
    stamp = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    name = backup_file_name("mysql", stamp, "7.0.0", "7.4.0")
    assert name == "opennebula-20261127T120000Z-db7.0.0-to7.4.0.sql"
    parsed = parse_backup_name(name)
    assert parsed is not None
    assert (parsed.backend, parsed.stamp, parsed.db_version, parsed.target_version) == (
        "mysql", stamp, "7.0.0", "7.4.0")
    manual = backup_file_name("sqlite", stamp, "7.0.0", None)
    assert manual == "one.db-20261127T120000Z-db7.0.0.sqlite"
    parsed_manual = parse_backup_name(manual)
    assert parsed_manual is not None and parsed_manual.target_version is None


@pytest.mark.parametrize("name", [
    "one.db", "one.db_2026-11-27.bck",  # onedb's own backup names
    "mysql_localhost_opennebula_2026.sql",
    "opennebula-20261127T120000Z-db7.0.0.sqlite",  # stem and extension disagree
    "one.db-20261127T120000Z-db7.0.0.sql",
    "opennebula-20261127T120000Z-db7.0.0.sql.bak",
    ".opennebula-20261127T120000Z-db7.0.0.sql.partial",
    "opennebula-2026-11-27-db7.0.0.sql",
    "notes.txt",
])
def test_foreign_names_are_not_backups(name: str) -> None:
    assert parse_backup_name(name) is None


def test_prune_keeps_newest_and_never_touches_foreign_files(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.backups.mkdir(parents=True)
    ours = [backup_file_name("sqlite", datetime(2026, 1, day, tzinfo=UTC), "7.0.0", "7.4.0")
            for day in (5, 1, 9, 3, 7)]  # not in time order on purpose
    foreign = ["one.db_2026.bck", "important.sql", ".one.db-20260101T000000Z-db7.0.0.sqlite.x",
               "opennebula-20250101T000000Z-db7.0.0.sql.gz"]
    for name in ours + foreign:
        (layout.backups / name).write_text(name)
    (layout.backups / "opennebula-20200101T000000Z-db6.0.0.sql").mkdir()  # a dir: not ours

    removed = prune_backups(layout, 2, kind="upgrade")

    left = sorted(p.name for p in layout.backups.iterdir())
    kept = [backup_file_name("sqlite", datetime(2026, 1, day, tzinfo=UTC), "7.0.0", "7.4.0")
            for day in (7, 9)]
    assert sorted(p.name for p in removed) == sorted(set(ours) - set(kept))
    assert left == sorted([*kept, *foreign, "opennebula-20200101T000000Z-db6.0.0.sql"])
    assert [p.name for _, p in list_backups(layout)] == sorted(kept)
    assert prune_backups(layout, 2, kind="upgrade") == []
    with pytest.raises(ValueError, match="at least 1"):
        prune_backups(layout, 0, kind="upgrade")


def test_prune_counts_each_kind_apart(tmp_path: Path) -> None:
    """Automatic backups (made before an upgrade, named -to<version>) and manual ones."""
    layout = Layout(tmp_path)
    layout.backups.mkdir(parents=True)
    automatic = [backup_file_name("sqlite", datetime(2026, 1, day, tzinfo=UTC), "7.0.0", "7.4.0")
                 for day in (1, 3, 5)]
    manual = [backup_file_name("sqlite", datetime(2026, 1, day, tzinfo=UTC), "7.4.0", None)
              for day in (2, 4, 6)]
    for name in automatic + manual:
        (layout.backups / name).write_text(name)

    removed = prune_backups(layout, 1, kind="upgrade")

    assert sorted(p.name for p in removed) == sorted(automatic[:2])
    assert [p.name for _, p in list_backups(layout, kind="manual")] == manual
    assert [parsed.kind for parsed, _ in list_backups(layout)] == [
        "manual", "manual", "upgrade", "manual"]
    assert [p.name for p in prune_backups(layout, 2, kind="manual")] == [manual[0]]


def test_mask_replaces_every_secret_longest_first() -> None:
    text = f"mysqldump -p'{CANARY_DB}' failed; {CANARY_DB}x and admin {CANARY_ADMIN}"
    masked = mask(text, [CANARY_DB, CANARY_ADMIN, "", CANARY_DB + "x"])
    assert CANARY_DB not in masked and CANARY_ADMIN not in masked
    assert masked == "mysqldump -p'***' failed; *** and admin ***"


def test_describe_image_for_db_names_the_minor_series() -> None:
    assert describe_image_for_db("7.4.0").startswith("an image of OpenNebula 7.4.x")
    assert "7.10.x" in describe_image_for_db("7.10.0")
    assert "not-a-version" in describe_image_for_db("not-a-version")


def test_onedb_gets_explicit_options_and_the_password_only_in_its_environment(
        tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    settings = mysql_settings(tmp_path)
    argv = onedb_command(settings, layout)  # type: ignore[arg-type]
    assert argv == [str(tmp_path / "usr/bin/onedb"), "upgrade", "--no-backup", "-t", "mysql",
                    "-S", "db.example", "-P", "3307", "-u", "one", "-d", "cloud"]
    assert not any(CANARY_DB in arg or CANARY_ADMIN in arg for arg in argv)
    env = onedb_environment(settings, layout)  # type: ignore[arg-type]
    assert env["ONE_DB_PASSWORD"] == CANARY_DB
    assert env["ONE_AUTH"] == str(layout.one_auth)
    assert set(env) == {"HOME", "PATH", "LANG", "ONE_AUTH", "USER", "LOGNAME", "ONE_DB_PASSWORD"}
    assert CANARY_ADMIN not in "".join(env.values())


def test_sqlite_onedb_gets_the_file_and_no_password(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    settings = load_settings({"ONEADMIN_PASSWORD": CANARY_ADMIN}, root=tmp_path)
    assert onedb_command(settings, layout)[1:] == ["upgrade", "--no-backup", "-s",
                                                   str(layout.sqlite_db)]
    assert "ONE_DB_PASSWORD" not in onedb_environment(settings, layout)


def test_upgrade_description_is_secret_free(tmp_path: Path) -> None:
    action = UpgradeSchema(mysql_settings(tmp_path), Layout(tmp_path),  # type: ignore[arg-type]
                           "7.0.0", "7.4.0")
    described = action.describe()
    assert described["action"] == "upgrade-schema"
    assert (described["from"], described["to"]) == ("7.0.0", "7.4.0")
    assert "onedb upgrade --no-backup" in described["steps"]
    assert CANARY_DB not in repr(described) and CANARY_DB not in repr(action)
    assert CANARY_ADMIN not in repr(described) and CANARY_ADMIN not in repr(action)


def test_oned_running_reads_the_lock(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert oned_running(layout) is None  # no lock: stopped
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")  # oned's real lock is empty; no oned runs: stale
    assert oned_running(layout) is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        layout.lock_file.write_text(f"{sleeper.pid}\n")
        assert oned_running(layout) == f"{layout.lock_file} is held by running process " \
                                       f"{sleeper.pid}"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert oned_running(layout) is None  # that pid is gone


def test_oned_running_finds_the_layouts_oned_binary(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    oned = layout.binary("/usr/bin/oned")
    oned.parent.mkdir(parents=True)
    oned.write_text("# stand-in for oned: only sleeps\nimport time\ntime.sleep(30)\n")
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")
    process = subprocess.Popen([sys.executable, str(oned)])
    try:
        reason = oned_running(layout)
        assert reason is not None and str(process.pid) in reason
    finally:
        process.kill()
        process.wait()
    assert os.path.exists(layout.lock_file)  # only looked at, never removed
