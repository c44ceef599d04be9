"""Plan actions on a throwaway root: what each one changes, describes and logs.

Ownership cases need root (only root can give files to oneadmin) and skip otherwise.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from onerun.errors import EXIT_OK, EXIT_REFUSED, UnsafeStateError
from onerun.layout import Layout
from onerun.plan import (
    ApplyContext,
    Check,
    EnsureDirectory,
    EnsureFileOwner,
    Plan,
    Refusal,
    RemoveFile,
    ReplaceTree,
    WriteFile,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to oneadmin")


class Recorder:
    """Collects log lines so tests can check what an action said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def context(root: Path, uid: int | None = None, gid: int | None = None) -> ApplyContext:
    return ApplyContext(Layout(root), os.getuid() if uid is None else uid,
                        os.getgid() if gid is None else gid, Recorder())


def log_of(ctx: ApplyContext) -> list[str]:
    assert isinstance(ctx.log, Recorder)
    return ctx.log.lines


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o7777


# --- EnsureDirectory -------------------------------------------------------------------


def test_ensure_directory_creates_nested_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "var/lib/one/.onerun"
    EnsureDirectory(target, 0o700).apply(context(tmp_path))
    assert target.is_dir()
    assert mode_of(target) == 0o700


def test_ensure_directory_fixes_mode_of_existing(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir(mode=0o777)
    target.chmod(0o777)
    (target / "keep").write_text("x")
    EnsureDirectory(target, 0o750).apply(context(tmp_path))
    assert mode_of(target) == 0o750
    assert (target / "keep").read_text() == "x"


@needs_root
def test_ensure_directory_gives_only_the_directory_to_oneadmin(
    tmp_path: Path, oneadmin_user: pwd.struct_passwd
) -> None:
    target = tmp_path / "var/lib/one"
    target.mkdir(parents=True)
    inside = target / "one.db"
    inside.write_text("root's file")
    ctx = context(tmp_path, oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    EnsureDirectory(target, 0o750).apply(ctx)
    status = target.stat()
    assert (status.st_uid, status.st_gid) == (oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    assert (inside.stat().st_uid, inside.stat().st_gid) == (0, 0)


@needs_root
def test_ensure_directory_not_owned_by_oneadmin_goes_to_onerun_s_user(
    tmp_path: Path, oneadmin_user: pwd.struct_passwd
) -> None:
    """What a root supervisord writes (its socket, pidfile) must not be oneadmin's."""
    target = tmp_path / "run"
    target.mkdir()
    os.chown(target, oneadmin_user.pw_uid, oneadmin_user.pw_gid)  # left by an earlier start
    EnsureDirectory(target, 0o755, owned_by_oneadmin=False).apply(
        context(tmp_path, oneadmin_user.pw_uid, oneadmin_user.pw_gid))
    assert (target.stat().st_uid, target.stat().st_gid) == (os.geteuid(), os.getegid())
    assert EnsureDirectory(target, 0o755, owned_by_oneadmin=False).describe()["owner"] == (
        "onerun's user")


def test_ensure_directory_without_a_mode_keeps_the_volume_s_mode(tmp_path: Path) -> None:
    target = tmp_path / "volume"
    target.mkdir()
    target.chmod(0o2770)  # fsGroup's setgid bit
    EnsureDirectory(target, None).apply(context(tmp_path, os.geteuid(), os.getegid()))
    assert target.stat().st_mode & 0o7777 == 0o2770


# --- EnsureFileOwner -------------------------------------------------------------------


def test_ensure_file_owner_sets_mode_and_keeps_content(tmp_path: Path) -> None:
    target = tmp_path / "one.db"
    target.write_bytes(b"SQLite format 3\0")
    target.chmod(0o666)
    EnsureFileOwner(target, 0o600).apply(context(tmp_path))
    assert mode_of(target) == 0o600
    assert target.read_bytes() == b"SQLite format 3\0"
    assert EnsureFileOwner(target, 0o600).describe()["mode"] == "0600"


@needs_root
def test_ensure_file_owner_gives_file_to_oneadmin(
    tmp_path: Path, oneadmin_user: pwd.struct_passwd
) -> None:
    target = tmp_path / "one.db"
    target.write_text("db")
    EnsureFileOwner(target, 0o640).apply(
        context(tmp_path, oneadmin_user.pw_uid, oneadmin_user.pw_gid))
    assert (target.stat().st_uid, target.stat().st_gid) == (
        oneadmin_user.pw_uid, oneadmin_user.pw_gid)


# --- WriteFile -------------------------------------------------------------------------


def test_write_file_writes_content_with_mode_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "etc/one/oned.conf"
    WriteFile(target, b"PORT = 2633\n", 0o640, why="rendered").apply(context(tmp_path))
    assert target.read_bytes() == b"PORT = 2633\n"
    assert mode_of(target) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["oned.conf"]


def test_write_file_replaces_existing_and_fixes_mode(tmp_path: Path) -> None:
    target = tmp_path / "one_key"
    target.write_text("old")
    target.chmod(0o644)
    WriteFile(target, b"new", 0o600, why="key", sensitive=True).apply(context(tmp_path))
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o600


def test_write_file_only_if_absent_keeps_existing(tmp_path: Path) -> None:
    target = tmp_path / "one_auth"
    target.write_text("oneadmin:kept")
    target.chmod(0o600)
    action = WriteFile(target, b"oneadmin:other", 0o644, why="bootstrap", only_if_absent=True)
    action.apply(context(tmp_path))
    assert target.read_text() == "oneadmin:kept"
    assert mode_of(target) == 0o600
    assert action.describe()["only_if_absent"] is True
    fresh = tmp_path / "fresh"
    WriteFile(fresh, b"x", 0o644, why="w", only_if_absent=True).apply(context(tmp_path))
    assert fresh.read_bytes() == b"x"


def test_sensitive_write_never_describes_its_content(tmp_path: Path) -> None:
    secret = b"oneadmin:s3cr3t-Password-123"
    step = WriteFile(tmp_path / "one_auth", secret, 0o600, why="auth", sensitive=True).describe()
    text = json.dumps(step)
    assert "s3cr3t" not in text
    assert step["content"] == "secret"
    assert "s3cr3t" not in repr(WriteFile(tmp_path / "x", secret, 0o600, why="auth"))
    plain = WriteFile(tmp_path / "oned.conf", b"12345", 0o644, why="render").describe()
    assert plain["content"] == "5 bytes"


@needs_root
def test_write_file_owned_by_oneadmin(tmp_path: Path, oneadmin_user: pwd.struct_passwd) -> None:
    target = tmp_path / "one_key"
    WriteFile(target, b"k" * 32, 0o600, why="key", sensitive=True).apply(
        context(tmp_path, oneadmin_user.pw_uid, oneadmin_user.pw_gid))
    assert (target.stat().st_uid, target.stat().st_gid) == (
        oneadmin_user.pw_uid, oneadmin_user.pw_gid)


# --- RemoveFile ------------------------------------------------------------------------


def test_remove_file_removes_logs_and_is_idempotent(tmp_path: Path) -> None:
    lock = tmp_path / "var/lock/one/one"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    ctx = context(tmp_path)
    action = RemoveFile(lock, "stale lock")
    action.apply(ctx)
    assert not lock.exists()
    assert log_of(ctx) == [f"removed {lock}: stale lock"]
    action.apply(ctx)  # already gone: nothing happens, nothing is logged
    assert log_of(ctx) == [f"removed {lock}: stale lock"]


# --- ReplaceTree -----------------------------------------------------------------------


def test_replace_tree_stamps_the_release_inside_the_copy(tmp_path: Path) -> None:
    from onerun.plan import STAMP_FILE

    source = tmp_path / "remotes-dist"
    (source / "im").mkdir(parents=True)
    (source / "im" / "probe").write_text("7.4 probe")
    target = tmp_path / "remotes"
    ReplaceTree(source, target, "image upgrade", stamp="7.4.0").apply(context(tmp_path))
    assert (target / STAMP_FILE).read_text() == "7.4.0\n"
    assert not (source / STAMP_FILE).exists()  # the image's copy is never written


def _image_remotes(root: Path) -> Path:
    source = root / "usr/share/one/remotes-dist"
    (source / "im/kvm.d").mkdir(parents=True)
    (source / "im/kvm.d/monitord-client.rb").write_text("# new probe\n")
    (source / "VERSION").write_text("7.0.2\n")
    (source / "link").symlink_to("VERSION")
    return source


def test_replace_tree_replaces_content_and_leaves_no_leftovers(tmp_path: Path) -> None:
    source = _image_remotes(tmp_path)
    target = tmp_path / "var/lib/one/remotes"
    (target / "obsolete").mkdir(parents=True)
    (target / "obsolete/old.sh").write_text("old")
    ctx = context(tmp_path)
    ReplaceTree(source, target, "image upgrade").apply(ctx)
    assert (target / "VERSION").read_text() == "7.0.2\n"
    assert (target / "im/kvm.d/monitord-client.rb").read_text() == "# new probe\n"
    assert (target / "link").is_symlink()
    assert not (target / "obsolete").exists()
    # onerun has no record of the old tree: it is kept whole, dated, and nothing else is left.
    [kept] = [p for p in target.parent.iterdir() if p.name != "remotes"]
    assert kept.name.startswith("remotes.onerun-unknown-")
    assert (kept / "obsolete/old.sh").read_text() == "old"
    assert any("refreshed" in line and "image upgrade" in line for line in log_of(ctx))


def test_replace_tree_creates_missing_target(tmp_path: Path) -> None:
    source = _image_remotes(tmp_path)
    target = tmp_path / "var/lib/one/remotes"
    target.parent.mkdir(parents=True)
    ReplaceTree(source, target, "missing").apply(context(tmp_path))
    assert (target / "VERSION").read_text() == "7.0.2\n"


def test_replace_tree_cleans_an_interrupted_run(tmp_path: Path) -> None:
    """An earlier run killed after moving the old tree aside leaves .new and .old behind."""
    source = _image_remotes(tmp_path)
    target = tmp_path / "var/lib/one/remotes"
    staging = target.with_name(".remotes.new")
    old = target.with_name(".remotes.old")
    (staging / "half").mkdir(parents=True)
    (old / "previous").mkdir(parents=True)
    ReplaceTree(source, target, "retry").apply(context(tmp_path))
    assert not staging.exists()
    assert not old.exists()
    assert not (target / "half").exists()
    assert (target / "VERSION").exists()


@needs_root
def test_replace_tree_gives_the_copy_to_oneadmin(
    tmp_path: Path, oneadmin_user: pwd.struct_passwd
) -> None:
    source = _image_remotes(tmp_path)
    target = tmp_path / "var/lib/one/remotes"
    target.parent.mkdir(parents=True)
    ReplaceTree(source, target, "owner").apply(
        context(tmp_path, oneadmin_user.pw_uid, oneadmin_user.pw_gid))
    ids = (oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    for path in (target, target / "im", target / "im/kvm.d/monitord-client.rb", target / "link"):
        status = path.lstat()
        assert (status.st_uid, status.st_gid) == ids, path
    source_file = source / "VERSION"
    assert source_file.stat().st_uid == 0  # the image's pristine copy stays root's


# --- Plan --------------------------------------------------------------------------------


def test_plan_describe_ends_with_exec_or_refuse(tmp_path: Path) -> None:
    actions = [Check("database", "ok", "bootstrapped"), RemoveFile(tmp_path / "x", "why")]
    running = Plan(list(actions), command=("supervisord", "-c", "/run/onerun/supervisord.conf"))
    steps = running.describe()
    assert [s["action"] for s in steps] == ["check", "remove", "exec"]
    assert steps[-1]["command"] == "supervisord -c /run/onerun/supervisord.conf"
    assert running.exit_code == EXIT_OK

    refused = Plan(list(actions), refusal=Refusal("DB is newer", "use a newer image"),
                   command=("supervisord",))
    steps = refused.describe()
    assert steps[-1] == {"action": "refuse", "reason": "DB is newer", "fix": "use a newer image"}
    assert all(step["action"] != "exec" for step in steps)
    assert refused.exit_code == EXIT_REFUSED


def test_plan_apply_with_refusal_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "written"
    doomed = tmp_path / "doomed"
    doomed.write_text("still here")
    plan = Plan([WriteFile(target, b"x", 0o644, why="w"), RemoveFile(doomed, "r")],
                refusal=Refusal("lost database", "restore a backup"))
    with pytest.raises(UnsafeStateError) as raised:
        plan.apply(context(tmp_path))
    assert raised.value.exit_code == EXIT_REFUSED
    assert raised.value.reason == "lost database"
    assert raised.value.fix == "restore a backup"
    assert not target.exists()
    assert doomed.read_text() == "still here"


def test_plan_apply_runs_in_order_and_logs_writes(tmp_path: Path) -> None:
    directory = tmp_path / "etc/one"
    plan = Plan()
    plan.add(EnsureDirectory(directory, 0o750))
    plan.add(WriteFile(directory / "oned.conf", b"conf", 0o640, why="rendered from settings"))
    plan.add(Check("remotes", "skipped", "no remotes-dist"))
    plan.add(Check("database", "ok", "quiet"))
    ctx = context(tmp_path)
    plan.apply(ctx)
    assert (directory / "oned.conf").read_bytes() == b"conf"
    assert log_of(ctx) == [
        f"write {directory / 'oned.conf'}: rendered from settings",
        "remotes: skipped: no remotes-dist",
    ]
    plan.apply(ctx)  # applying twice is harmless
    assert (directory / "oned.conf").read_bytes() == b"conf"
