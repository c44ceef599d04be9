"""onedb's argv and environment, and how the upgrade describes itself: no database.

The upgrade against real databases is in tests/integration/test_upgrade.py.
"""

from __future__ import annotations

from pathlib import Path

from onerun.layout import Layout
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
