"""File errors while applying the plan: the path, the step, the likely fix, exit 3."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from onerun.errors import EXIT_REFUSED, UnsafeStateError
from onerun.fileerrors import failed_path, file_error, likely_fix
from onerun.layout import Layout
from onerun.plan import ApplyContext, Plan, ReplaceTree

LAYOUT = Layout(Path("/r"))


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/r/usr/share/one/etc-dist/alertmanager", errno.EACCES, ["image", "readable", "a+rX"]),
    ("/r/usr/share/one/remotes-dist", errno.ENOENT, ["image lacks", "docker/Dockerfile"]),
    ("/r/var/lib/one/.one/one_auth", errno.EACCES, ["volume", "chown 9869:9869", "as root"]),
    ("/r/etc/one/alertmanager", errno.EACCES, ["emptyDir at /r/etc/one", "uid"]),
    ("/r/etc/one/oned.conf", errno.EROFS, ["emptyDir at /r/etc/one"]),
    ("/r/run/onerun/supervisord.conf", errno.EACCES, ["emptyDir at /r/run "]),
    ("/r/var/log/one/oned.log", errno.EACCES, ["emptyDir at /r/var/log/one"]),
    ("/r/var/lib/one/one.db", errno.ENOSPC, ["free space"]),
])
def test_the_fix_follows_where_the_path_lives(path: str, code: int, words: list[str]) -> None:
    fix = likely_fix(Path(path), LAYOUT, OSError(code, os.strerror(code), path))
    for word in words:
        assert word in fix + " ", (word, fix)


def test_the_refusal_names_step_reason_and_the_failing_path() -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "/r/etc/one/.oned.conf.x1")
    target = Path("/r/etc/one/oned.conf")
    refusal = file_error(error, "writing /r/etc/one/oned.conf", LAYOUT, target)
    assert isinstance(refusal, UnsafeStateError) and refusal.exit_code == EXIT_REFUSED
    assert refusal.reason == ("writing /r/etc/one/oned.conf: Permission denied "
                              "(/r/etc/one/.oned.conf.x1)")
    assert "emptyDir at /r/etc/one" in refusal.fix


def test_copytree_errors_name_their_first_path() -> None:
    error = shutil.Error([("/r/usr/share/one/remotes-dist/x", "/r/var/lib/one/remotes/x",
                           "[Errno 13] Permission denied")])
    assert failed_path(error) == Path("/r/var/lib/one/remotes/x")
    refusal = file_error(error, "copying", LAYOUT)
    assert "Permission denied" in refusal.reason and "volume" in refusal.fix


def test_a_failing_step_of_the_plan_is_a_refusal(tmp_path: Path) -> None:
    """A real failure (root reads anything, so a missing source): exit 3, not a traceback."""
    layout = Layout(tmp_path)
    step = ReplaceTree(layout.remotes_dist, layout.remotes, "missing on the volume",
                       stamp="7.4.0+x")
    with pytest.raises(UnsafeStateError) as caught:
        Plan(actions=[step]).apply(ApplyContext(layout, os.getuid(), os.getgid(), print))
    refusal = caught.value
    assert refusal.exit_code == EXIT_REFUSED
    assert refusal.reason.startswith(f"copying the image's tree to {layout.remotes} "
                                     "(missing on the volume): No such file or directory")
    assert str(layout.remotes_dist) in refusal.reason
    assert "image lacks" in refusal.fix
    assert not layout.remotes.exists()
