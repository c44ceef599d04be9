"""Classification rules (docs/database.md) and the sqlite reader on real one.db files of
oned 7.0.0."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from testlib import (
    DB_FIXTURES,
    ENCRYPTED_FIXTURE_STATEMENTS,
    ENCRYPTED_FIXTURE_VALUES,
    crash_inside_transaction,
    require_shared,
)

from onerun.database import DbState, classify
from onerun.database.classify import Facts, decide, is_true, parse_user_body
from onerun.database.sqlite import classify_sqlite
from onerun.errors import UnsafeStateError
from onerun.layout import Layout
from onerun.settings import load_settings

FIXTURE_SHA256 = hashlib.sha256(b"fixturepass").hexdigest()
USER0 = (
    "<USER><ID>0</ID><NAME>oneadmin</NAME><PASSWORD><![CDATA[" + FIXTURE_SHA256
    + "]]></PASSWORD><AUTH_DRIVER><![CDATA[core]]></AUTH_DRIVER></USER>"
)
SERVER_SHA256 = hashlib.sha256(b"server-secret").hexdigest()
USER1 = (
    "<USER><ID>1</ID><NAME>serveradmin</NAME><PASSWORD><![CDATA[" + SERVER_SHA256
    + "]]></PASSWORD><AUTH_DRIVER><![CDATA[server_cipher]]></AUTH_DRIVER></USER>"
)
ALL_MARKERS = frozenset({"logdb", "pool_control", "db_versioning", "local_db_versioning",
                         "user_pool", "system_attributes", "vm_pool"})


# -- the decision, from readings -----------------------------------------------------------

def test_no_tables_is_empty() -> None:
    observation = decide(Facts(where="db", tables=frozenset()))
    assert observation.state is DbState.EMPTY
    assert "no OpenNebula tables" in observation.detail


def test_foreign_tables_only_is_empty_and_says_so() -> None:
    observation = decide(Facts(where="db", tables=frozenset({"wp_posts", "wp_users"})))
    assert observation.state is DbState.EMPTY
    assert "2 other tables" in observation.detail


@pytest.mark.parametrize(("db_version", "local_db_version", "missing"), [
    (None, "7.0.0", "db_versioning"),
    ("7.0.0", None, "local_db_versioning"),
    (None, None, "local_db_versioning"),
])
def test_a_missing_version_row_is_partial_tables(
        db_version: str | None, local_db_version: str | None, missing: str) -> None:
    observation = decide(Facts(where="db", tables=ALL_MARKERS, db_version=db_version,
                               local_db_version=local_db_version, user0_body=USER0))
    assert observation.state is DbState.PARTIAL_TABLES
    assert f"{missing} has no version" in observation.detail


def test_one_marker_table_alone_is_partial_tables() -> None:
    observation = decide(Facts(where="db", tables=frozenset({"logdb"})))
    assert observation.state is DbState.PARTIAL_TABLES
    assert "table db_versioning is missing" in observation.detail


def test_versions_without_user_pool_table_is_partial_tables() -> None:
    observation = decide(Facts(where="db", tables=ALL_MARKERS - {"user_pool"},
                               db_version="7.0.0", local_db_version="7.0.0"))
    assert observation.state is DbState.PARTIAL_TABLES
    assert "no table user_pool" in observation.detail


def test_versions_without_user0_is_partial_users() -> None:
    observation = decide(Facts(where="db", tables=ALL_MARKERS, db_version="7.0.0",
                               local_db_version="7.0.0", user1_body=USER1))
    assert observation.state is DbState.PARTIAL_USERS
    assert observation.oneadmin_password_sha256 is None
    assert observation.serveradmin_present
    assert observation.serveradmin_password_sha256 == SERVER_SHA256


def test_versions_and_user0_is_bootstrapped_with_what_was_read() -> None:
    observation = decide(Facts(where="db", tables=ALL_MARKERS, db_version="7.0.0",
                               local_db_version="6.10.0", user0_body=USER0, is_slave=True))
    assert observation.state is DbState.BOOTSTRAPPED
    assert (observation.db_version, observation.local_db_version) == ("7.0.0", "6.10.0")
    assert observation.oneadmin_name == "oneadmin"
    assert observation.oneadmin_password_sha256 == FIXTURE_SHA256
    assert observation.is_slave and not observation.serveradmin_present
    assert observation.serveradmin_password_sha256 is None
    assert "federation slave" in observation.detail


def test_serveradmin_password_is_read_from_user1_not_user0() -> None:
    observation = decide(Facts(where="db", tables=ALL_MARKERS, db_version="7.0.0",
                               local_db_version="7.0.0", user0_body=USER0, user1_body=USER1))
    assert observation.oneadmin_password_sha256 == FIXTURE_SHA256
    assert observation.serveradmin_password_sha256 == SERVER_SHA256
    assert observation.serveradmin_present


def test_user1_with_an_empty_body_is_present_without_a_password() -> None:
    observation = decide(Facts(where="db", tables=ALL_MARKERS, db_version="7.0.0",
                               local_db_version="7.0.0", user0_body=USER0, user1_body=""))
    assert observation.serveradmin_present
    assert observation.serveradmin_password_sha256 is None


def test_user0_with_an_unreadable_body_is_still_bootstrapped() -> None:
    """oned decides on the row's presence; the body only feeds the password check."""
    observation = decide(Facts(where="db", tables=ALL_MARKERS, db_version="7.0.0",
                               local_db_version="7.0.0", user0_body="<USER><NAME>"))
    assert observation.state is DbState.BOOTSTRAPPED
    assert observation.oneadmin_password_sha256 is None


def test_parse_user_body() -> None:
    assert parse_user_body(USER0) == ("oneadmin", FIXTURE_SHA256)
    assert parse_user_body("<USER><NAME>x</NAME></USER>") == ("x", None)
    assert parse_user_body("not xml") == (None, None)
    assert parse_user_body(None) == (None, None)


@pytest.mark.parametrize(("value", "expected"), [
    (0, False), (1, True), ("0", False), ("1", True), (b"1", True), (None, False), ("", False),
])
def test_is_true(value: object, expected: bool) -> None:
    assert is_true(value) is expected


# -- real one.db files ---------------------------------------------------------------------

def server_secret_sha256(dot_one: Path) -> str:
    """sha256 hex of the plain secret the fixture's oneflow_auth holds ("serveradmin:<secret>")."""
    text = require_shared(dot_one / "oneflow_auth").read_text().removesuffix("\n")
    user, _, secret = text.partition(":")
    assert user == "serveradmin" and secret
    return hashlib.sha256(secret.encode()).hexdigest()


def _root_with(tmp_path: Path, fixture: str | None) -> tuple[Path, Layout]:
    """A root whose /var/lib/one/one.db is a copy of a fixture (or absent)."""
    root = tmp_path / "root"
    (root / "var/lib/one").mkdir(parents=True)
    layout = Layout(root)
    if fixture is not None:
        source = require_shared(DB_FIXTURES / fixture / "one.db")
        shutil.copyfile(source, layout.sqlite_db)
    return root, layout


def _snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Every file in a directory: content hash, mtime (ns) and mode."""
    return {
        entry.name: (hashlib.sha256(entry.read_bytes()).hexdigest(), entry.stat().st_mtime_ns,
                     entry.stat().st_mode)
        for entry in directory.iterdir()
    }


SQLITE = load_settings({})


def test_bootstrapped_fixture(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, "sqlite-bootstrapped")
    observation = classify(SQLITE, layout)
    assert observation.state is DbState.BOOTSTRAPPED
    assert (observation.db_version, observation.local_db_version) == ("7.0.0", "7.0.0")
    assert observation.oneadmin_password_sha256 == FIXTURE_SHA256
    assert observation.oneadmin_name == "oneadmin"
    assert observation.serveradmin_present
    assert observation.serveradmin_password_sha256 == server_secret_sha256(
        DB_FIXTURES / "sqlite-bootstrapped" / "dot-one")
    assert not observation.is_slave
    assert len(observation.tables) == 39


def test_partial_users_fixture(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, "sqlite-partial-users")
    observation = classify(SQLITE, layout)
    assert observation.state is DbState.PARTIAL_USERS
    assert (observation.db_version, observation.local_db_version) == ("7.0.0", "7.0.0")
    assert not observation.serveradmin_present
    assert observation.serveradmin_password_sha256 is None


def test_partial_tables_fixture(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, "sqlite-partial-tables")
    observation = classify(SQLITE, layout)
    assert observation.state is DbState.PARTIAL_TABLES
    assert observation.db_version is None and observation.local_db_version == "7.0.0"
    assert "db_versioning" not in observation.tables


def test_missing_file_is_empty_and_not_created(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, None)
    observation = classify(SQLITE, layout)
    assert observation.state is DbState.EMPTY
    assert observation.detail == f"{layout.sqlite_db} does not exist"
    assert list(layout.sqlite_db.parent.iterdir()) == []


def test_empty_file_is_empty(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, None)
    layout.sqlite_db.touch()
    before = _snapshot(layout.sqlite_db.parent)
    assert classify(SQLITE, layout).state is DbState.EMPTY
    assert _snapshot(layout.sqlite_db.parent) == before


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, None)
    layout.sqlite_db.write_bytes(b"this is not an sqlite database\n" * 200)
    before = _snapshot(layout.sqlite_db.parent)
    with pytest.raises(UnsafeStateError, match="cannot be read as an sqlite database"):
        classify(SQLITE, layout)
    assert _snapshot(layout.sqlite_db.parent) == before


@pytest.mark.parametrize("fixture", ["sqlite-bootstrapped", "sqlite-partial-users",
                                     "sqlite-partial-tables"])
def test_classify_never_changes_the_directory(tmp_path: Path, fixture: str) -> None:
    """No write, no journal or WAL file, same mtime: observing is read-only."""
    _, layout = _root_with(tmp_path, fixture)
    os.utime(layout.sqlite_db, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = _snapshot(layout.sqlite_db.parent)
    classify(SQLITE, layout)
    assert _snapshot(layout.sqlite_db.parent) == before


def test_read_only_fixture_can_be_classified_in_place() -> None:
    """Classifying the shared fixture where it lies leaves it byte for byte as it was."""
    path = require_shared(DB_FIXTURES / "sqlite-bootstrapped" / "one.db")
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    assert classify_sqlite(path).state is DbState.BOOTSTRAPPED
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


# -- a crash inside a transaction (hot journal) -------------------------------------------


def _crashed_root(tmp_path: Path) -> tuple[Layout, bytes, bytes]:
    """A root whose one.db (a copy of the bootstrapped fixture) was left by a writer killed
    mid-transaction: (layout, the committed file's bytes, the hot journal's bytes)."""
    _, layout = _root_with(tmp_path, "sqlite-bootstrapped")
    committed = layout.sqlite_db.read_bytes()
    journal = crash_inside_transaction(layout.sqlite_db)
    assert layout.sqlite_db.read_bytes() != committed  # uncommitted pages reached the file
    return layout, committed, journal


def test_hot_journal_is_kept_aside_then_rolled_back(tmp_path: Path) -> None:
    """The crash of a write leaves a journal only a write can roll back: classification
    keeps a copy of the files as found, lets sqlite roll back, and sees the committed state."""
    layout, committed, journal = _crashed_root(tmp_path)
    crashed_db = layout.sqlite_db.read_bytes()

    observation = classify(SQLITE, layout)

    assert observation.state is DbState.BOOTSTRAPPED
    assert observation.oneadmin_name == "oneadmin"
    assert observation.db_version == "7.0.0"
    assert "rolled back" in observation.detail
    assert layout.sqlite_db.read_bytes() == committed  # exactly the committed state
    assert not layout.sqlite_db.with_name("one.db-journal").exists()
    kept = [path for path in layout.backups.iterdir() if path.name.startswith("one.db-crash-")]
    assert len(kept) == 1 and str(kept[0]) in observation.detail
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o700
    assert (kept[0] / "one.db").read_bytes() == crashed_db
    assert (kept[0] / "one.db-journal").read_bytes() == journal
    for copy in kept[0].iterdir():
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        db_stat = layout.sqlite_db.stat()
        assert (copy.stat().st_uid, copy.stat().st_gid) == (db_stat.st_uid, db_stat.st_gid)
    # A second look finds nothing to recover and keeps no second copy.
    assert classify(SQLITE, layout).state is DbState.BOOTSTRAPPED
    assert len(list(layout.backups.iterdir())) == 1


def test_dry_run_classifies_a_rolled_back_copy_and_changes_nothing(tmp_path: Path) -> None:
    layout, _, _ = _crashed_root(tmp_path)
    before = _snapshot(layout.sqlite_db.parent)
    observation = classify(SQLITE, layout, dry_run=True)
    assert observation.state is DbState.BOOTSTRAPPED
    assert observation.oneadmin_name == "oneadmin"
    assert "rolled back" in observation.detail
    assert _snapshot(layout.sqlite_db.parent) == before
    assert not layout.backups.exists()


def test_hot_journal_is_left_alone_while_an_oned_may_run(tmp_path: Path) -> None:
    """A journal is only hot when no writer is alive: with an oned on the volume onerun
    touches nothing and says why."""
    layout, _, _ = _crashed_root(tmp_path)
    binary = layout.binary("/usr/bin/oned")
    binary.parent.mkdir(parents=True)
    binary.write_text("import time\ntime.sleep(30)\n")
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")
    before = _snapshot(layout.sqlite_db.parent)
    with subprocess.Popen([sys.executable, str(binary)]) as oned:
        try:
            with pytest.raises(UnsafeStateError, match="oned may still run") as info:
                classify(SQLITE, layout)
        finally:
            oned.kill()
    assert str(oned.pid) in str(info.value)
    assert _snapshot(layout.sqlite_db.parent) == before
    assert not layout.backups.exists()


# -- what a start needs to prove a one_key ----------------------------------------------------


def test_key_fingerprint_and_encrypted_values_are_read(tmp_path: Path) -> None:
    """The fingerprint in oneadmin's template always; encrypted values (users, datastores,
    VMs that are not DONE) only when asked, and never in the observation's repr."""
    _, layout = _root_with(tmp_path, "sqlite-bootstrapped")
    with sqlite3.connect(layout.sqlite_db) as db:
        for statement in ENCRYPTED_FIXTURE_STATEMENTS:
            db.execute(statement.format(**ENCRYPTED_FIXTURE_VALUES))
    values = ENCRYPTED_FIXTURE_VALUES
    plain = classify(SQLITE, layout)
    assert plain.state is DbState.BOOTSTRAPPED
    assert plain.one_key_fingerprint == values["fingerprint"]
    assert plain.encrypted_values == ()
    asked = classify(SQLITE, layout, encrypted=True)
    assert sorted(asked.encrypted_values) == sorted([values["user"], values["datastore"],
                                                     values["vm"]])
    assert values["user"] not in repr(asked)


def test_the_fixture_has_no_fingerprint_and_nothing_encrypted(tmp_path: Path) -> None:
    _, layout = _root_with(tmp_path, "sqlite-bootstrapped")
    observation = classify(SQLITE, layout, encrypted=True)
    assert observation.one_key_fingerprint is None and observation.encrypted_values == ()
