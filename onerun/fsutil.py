"""Small filesystem primitives: atomic writes and ownership fixes that never recurse.

Stdlib only. Ownership is changed only when running as root; as oneadmin (the chart's
default, under fsGroup) everything is already ours.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def running_as_root() -> bool:
    return os.geteuid() == 0


def chown_if_root(path: Path, uid: int, gid: int) -> None:
    """Give ``path`` (not its contents) to uid:gid when we may; a no-op for non-root."""
    if running_as_root():
        os.chown(path, uid, gid, follow_symlinks=False)


def atomic_write(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    """Write via temp file + fsync + rename, so readers see the old or the new file only.

    The temp file is created with ``mode`` already applied, so a secret is never
    briefly world-readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        chown_if_root(tmp, uid, gid)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable: fsync the directory itself."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path, uid: int, gid: int) -> Path:
    """``path`` as a 0700 directory given to uid:gid (when root): for copies of secrets."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    chown_if_root(path, uid, gid)
    return path
