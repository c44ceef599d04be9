"""fsutil.atomic_write: readers see the old file or the new one, never a half or a leftover."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from onerun.fsutil import atomic_write, chown_if_root, running_as_root

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to oneadmin")


def _ids() -> tuple[int, int]:
    return os.getuid(), os.getgid()


def test_writes_content_and_mode_creating_parents(tmp_path: Path) -> None:
    target = tmp_path / "a/b/one_key"
    atomic_write(target, b"0123456789abcdef", 0o600, *_ids())
    assert target.read_bytes() == b"0123456789abcdef"
    assert target.stat().st_mode & 0o7777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["one_key"]


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "shared.conf"
    previous = os.umask(0o077)
    try:
        atomic_write(target, b"x", 0o644, *_ids())
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o7777 == 0o644


def test_replaces_existing_file_and_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "one_auth"
    target.write_text("oneadmin:old")
    target.chmod(0o666)
    atomic_write(target, b"oneadmin:new", 0o600, *_ids())
    assert target.read_text() == "oneadmin:new"
    assert target.stat().st_mode & 0o7777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["one_auth"]


def test_no_leftover_when_the_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "etc"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        atomic_write(blocker / "one/oned.conf", b"x", 0o644, *_ids())
    assert [p.name for p in tmp_path.iterdir()] == ["etc"]
    assert blocker.read_text() == "not a directory"


def test_no_leftover_when_the_rename_fails(tmp_path: Path) -> None:
    """The temp file is written, then the rename onto a directory fails: it is removed."""
    target = tmp_path / "remotes"
    target.mkdir()
    with pytest.raises(OSError):
        atomic_write(target, b"x", 0o644, *_ids())
    assert [p.name for p in tmp_path.iterdir()] == ["remotes"]
    assert target.is_dir()


@needs_root
def test_owner_is_applied(tmp_path: Path, oneadmin_user: pwd.struct_passwd) -> None:
    target = tmp_path / "one_key"
    atomic_write(target, b"k", 0o600, oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    status = target.stat()
    assert (status.st_uid, status.st_gid) == (oneadmin_user.pw_uid, oneadmin_user.pw_gid)


@needs_root
def test_chown_if_root_does_not_follow_symlinks(
    tmp_path: Path, oneadmin_user: pwd.struct_passwd
) -> None:
    victim = tmp_path / "etc-shadow"
    victim.write_text("root only")
    link = tmp_path / "link"
    link.symlink_to(victim)
    assert running_as_root()
    chown_if_root(link, oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    assert link.lstat().st_uid == oneadmin_user.pw_uid
    assert victim.stat().st_uid == 0
