"""Shared fixtures: paths to ../shared, the oneadmin user, throwaway roots.

Tests that need ../shared skip with a reason where it is absent (users do not have it).
"""

from __future__ import annotations

import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testlib import (
    PROJECT,
    grant_traverse,
    lay_out_etc_dist,
    restore_modes,
    write_image_versions,
)

pytest_plugins = ["fixtures.mariadb"]


@pytest.fixture(scope="session")
def oneadmin_user() -> Iterator[pwd.struct_passwd]:
    """The oneadmin account (uid/gid 9869 as the packages make it), created when absent.

    While it is in use, oneadmin may traverse to this checkout and to the interpreter (the
    directories' previous modes are put back afterwards).
    """
    try:
        entry = pwd.getpwnam("oneadmin")
    except KeyError:
        subprocess.run(["groupadd", "--gid", "9869", "oneadmin"], check=False)
        subprocess.run(
            ["useradd", "--uid", "9869", "--gid", "9869", "--home-dir", "/var/lib/one",
             "--no-create-home", "--shell", "/bin/bash", "oneadmin"],
            check=True,
        )
        entry = pwd.getpwnam("oneadmin")
    changed = grant_traverse([PROJECT / "onerun", Path(sys.executable).resolve(),
                              Path(sys.prefix) / "lib"])
    yield entry
    restore_modes(changed)


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
