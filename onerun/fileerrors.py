"""A file the container cannot read or write, turned into a refusal an operator can act on.

Why: a bare ``PermissionError`` says neither what onerun was doing nor whose mistake it is.
Where the path lives tells the likely fix: the image's own files (its build), the volume
(its ownership), or the runtime directories (an emptyDir). Exit 3, like every refusal.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from onerun.errors import UnsafeStateError
from onerun.layout import ONEADMIN_FALLBACK_ID, Layout

# Runtime directories the chart mounts as emptyDirs; anything else outside the volume and
# the image is treated like them.
_RUNTIME = ("/etc/one", "/run", "/var/log/one", "/var/lock")


def failed_path(error: OSError) -> Path | None:
    """The path the system call failed on (copytree's aggregate error names its first)."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        first = error.args[0][0] if error.args[0] else None
        return Path(first[1]) if isinstance(first, tuple) and len(first) == 3 else None
    return Path(os.fsdecode(error.filename)) if error.filename is not None else None


def _reason(error: OSError) -> str:
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        first = error.args[0][0] if error.args[0] else None
        return str(first[2]) if isinstance(first, tuple) and len(first) == 3 else str(error)
    return error.strerror or type(error).__name__


def _where(path: Path, layout: Layout) -> str:
    """Which kind of place ``path`` is: image, volume, or runtime."""
    if path.is_relative_to(layout.var_lib_one):
        return "volume"
    if path.is_relative_to(layout.path("/usr")):
        return "image"
    return "runtime"


def likely_fix(path: Path, layout: Layout, error: OSError) -> str:
    """The fix for ``error`` on ``path``, by where the path lives."""
    uid = os.geteuid()
    if error.errno == errno.ENOSPC:
        return f"free space on the filesystem holding {path}"
    where = _where(path, layout)
    if where == "image":
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return (f"the image lacks {path}: rebuild it from docker/Dockerfile, which installs "
                    "the OpenNebula packages and copies /etc/one to /usr/share/one/etc-dist")
        return (f"the image's files must be readable by every user (this one is uid {uid}): "
                f"rebuild the image so {path} is (e.g. `chmod -R a+rX` in its Dockerfile)")
    if where == "volume":
        owner = f"{ONEADMIN_FALLBACK_ID}:{ONEADMIN_FALLBACK_ID}"
        return (f"the volume belongs to oneadmin: give {path} to it (`chown {owner}`; the "
                f"chart sets fsGroup: {ONEADMIN_FALLBACK_ID}), or start once as root, which "
                "fixes the owners of the paths onerun manages")
    top = next((layout.path(p) for p in _RUNTIME if path.is_relative_to(layout.path(p))),
               path.parent)
    return (f"mount a writable emptyDir at {top} (the chart mounts them at /etc/one, "
            "/var/log/one, /run and /run/lock, where /var/lock links), or give the image's "
            f"{top} to the container's user (uid {uid})")


def file_error(error: OSError, doing: str, layout: Layout,
               path: Path | None = None) -> UnsafeStateError:
    """The refusal for ``error``, raised while ``doing`` (e.g. "writing /etc/one/oned.conf").

    ``path`` is what the step works on, used when the error names no file of its own.
    """
    failed = failed_path(error) or path
    where = f" ({failed})" if failed is not None and failed != path else ""
    return UnsafeStateError(
        f"{doing}: {_reason(error)}{where}",
        likely_fix(failed, layout, error) if failed is not None else
        "check the owners and modes of the paths named above")
