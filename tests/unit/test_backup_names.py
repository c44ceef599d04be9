"""Backup file names, their pruning, and the masking of secrets: no database.

Backups of real databases are in tests/integration/test_backup.py.
"""

from __future__ import annotations

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

CANARY_DB = "Canary-DbPw-7f3a9"
CANARY_ADMIN = "Canary-AdminPw-51c2"


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
