"""Paths and helpers the tests share (imported as `testlib`; `conftest` is ambiguous
because several test folders have one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
