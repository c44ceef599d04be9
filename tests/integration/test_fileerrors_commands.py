"""Files the container's user cannot read or write: exit 3 naming the path, what onerun was
doing with it and the likely fix, never "unexpected error".

Each case builds a real root whose modes and owners make one path unusable, then runs the
real command as oneadmin (a plain user: root would read and write anyway), as the chart
runs the image.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testlib import PROJECT, grant_traverse, restore_modes

MakeRoot = Callable[..., Path]


@pytest.fixture
def user_root(make_root: MakeRoot, oneadmin_user: pwd.struct_passwd) -> Iterator[Path]:
    """A 7.4.0 root that oneadmin owns and can reach, with the image's files left to root."""
    root = make_root("7.4.0", image_release="7.4.0", image_db_version="7.4.0")
    extra = root / "usr/share/one/etc-dist/alertmanager"
    extra.mkdir()
    (extra / "alertmanager.yml").write_text("route: {receiver: default}\n")
    os.chown(root, oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    changed = grant_traverse([root / "usr"])
    yield root
    restore_modes(changed)


def run_as_oneadmin(root: Path, user: pwd.struct_passwd, *command: str) -> Any:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": "/tmp", "ONEADMIN_PASSWORD": "File-Errors-1"}
    result = subprocess.run(
        [sys.executable, "-m", "onerun", *command, "--root", str(root)], cwd=PROJECT,
        env=env, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        capture_output=True, text=True, timeout=60, check=False)
    return result.returncode, result.stdout + result.stderr


def assert_names_a_fix(code: int, output: str, path: Path, *fix_words: str) -> None:
    assert code == 3, output
    assert "unexpected error" not in output and "Traceback" not in output, output
    assert str(path) in output, output
    assert "fix:" in output
    for word in fix_words:
        assert word in output, (word, output)


def test_unwritable_etc_one_names_the_directory_and_emptydir(
        user_root: Path, oneadmin_user: pwd.struct_passwd) -> None:
    """What a real container showed: a root-owned /etc/one (no writable emptyDir there)."""
    etc_one = user_root / "etc/one"
    etc_one.mkdir(parents=True)
    etc_one.chmod(0o755)  # root's, as in an image without the emptyDir mounted
    code, output = run_as_oneadmin(user_root, oneadmin_user, "render")
    assert_names_a_fix(code, output, etc_one, "emptyDir")
    assert list(etc_one.iterdir()) == []


def test_unreadable_directory_in_the_image_names_the_image_build(
        user_root: Path, oneadmin_user: pwd.struct_passwd) -> None:
    """A directory of the pristine etc-dist this user cannot list: its files must not be
    silently left out of /etc/one."""
    unreadable = user_root / "usr/share/one/etc-dist/alertmanager"
    unreadable.chmod(0o700)
    code, output = run_as_oneadmin(user_root, oneadmin_user, "render")
    assert_names_a_fix(code, output, unreadable, "image")
    assert "reading" in output


def test_unreadable_file_in_the_image_names_the_image_build(
        user_root: Path, oneadmin_user: pwd.struct_passwd) -> None:
    unreadable = user_root / "usr/share/one/etc-dist/oned.conf"
    unreadable.chmod(0o600)
    code, output = run_as_oneadmin(user_root, oneadmin_user, "start", "--dry-run")
    assert_names_a_fix(code, output, unreadable, "image")


def test_volume_directory_owned_by_root_names_the_volume_ownership(
        user_root: Path, oneadmin_user: pwd.struct_passwd) -> None:
    """/var/lib/one is oneadmin's but .one inside it is root's (a copy made as root)."""
    volume = user_root / "var/lib/one"
    volume.mkdir(parents=True)
    os.chown(volume, oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    dot_one = volume / ".one"
    dot_one.mkdir(mode=0o700)
    code, output = run_as_oneadmin(user_root, oneadmin_user, "start")
    assert_names_a_fix(code, output, dot_one, "9869")
    assert list(dot_one.iterdir()) == []
    assert not (user_root / "run/onerun/supervisord.conf").exists()


def test_image_directory_that_cannot_be_searched_names_the_image_build(
        user_root: Path, oneadmin_user: pwd.struct_passwd) -> None:
    """/usr/share/one itself closed to this user: even finding etc-dist fails."""
    (user_root / "usr/share/one").chmod(0o700)
    code, output = run_as_oneadmin(user_root, oneadmin_user, "render")
    assert_names_a_fix(code, output, user_root / "usr/share/one/etc-dist", "image")
