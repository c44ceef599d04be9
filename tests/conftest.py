"""Shared fixtures: paths to ../shared, the oneadmin user, throwaway roots.

Tests that need ../shared skip with a reason where it is absent (users do not have it).
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["fixtures.mariadb"]

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"
UPSTREAM = SHARED / "fixtures" / "opennebula"
DB_FIXTURES = SHARED / "fixtures" / "opennebula-db" / "7.0.0"
UPSTREAM_VERSIONS = ("7.0.0", "7.4.0")


def require_shared(path: Path) -> Path:
    """Skip the calling test with a reason when a ../shared fixture is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared fixtures are not available here)")
    return path


@pytest.fixture(scope="session")
def oneadmin_user() -> pwd.struct_passwd:
    """The oneadmin account (uid/gid 9869 as the packages make it), created when absent."""
    try:
        return pwd.getpwnam("oneadmin")
    except KeyError:
        pass
    subprocess.run(["groupadd", "--gid", "9869", "oneadmin"], check=False)
    subprocess.run(
        ["useradd", "--uid", "9869", "--gid", "9869", "--home-dir", "/var/lib/one",
         "--no-create-home", "--shell", "/bin/bash", "oneadmin"],
        check=True,
    )
    return pwd.getpwnam("oneadmin")


def lay_out_etc_dist(root: Path, version: str) -> Path:
    """Copy upstream configs of ``version`` to root/usr/share/one/etc-dist, as the image does."""
    source = require_shared(UPSTREAM / version / "etc")
    target = root / "usr/share/one/etc-dist"
    shutil.copytree(source, target, dirs_exist_ok=True)
    schedulers = target / "schedulers"
    schedulers.mkdir(exist_ok=True)
    for name in ("rank.conf", "one_drs.conf"):
        if (target / name).exists():
            shutil.move(target / name, schedulers / name)
    return target


def write_image_versions(root: Path, release: str, db_version: str) -> None:
    """Stand-ins for the two Ruby files the image's OpenNebula version is read from."""
    ruby = root / "usr/lib/one/ruby"
    (ruby / "onedb").mkdir(parents=True, exist_ok=True)
    (ruby / "opennebula.rb").write_text(f"module OpenNebula\n    VERSION = '{release}'\nend\n")
    (ruby / "onedb/database_schema.rb").write_text(
        "class OneDBBacKEnd\nend\n"
        f"LATEST_DB_VERSION = '{db_version}'\nLATEST_LOCAL_DB_VERSION = '{db_version}'\n"
    )


@pytest.fixture
def make_root(tmp_path: Path) -> Callable[..., Path]:
    """Build a throwaway root: upstream etc-dist of a version, optional image version files."""

    def build(version: str = "7.0.0", *, image_release: str | None = None,
              image_db_version: str | None = None, name: str = "root") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        lay_out_etc_dist(root, version)
        if image_release is not None:
            write_image_versions(root, image_release, image_db_version or version)
        return root

    return build
