"""Carry the log follower's output to the container's stdout, whatever user we run as.

supervisord writes a program's output to ``stdout_logfile`` by opening that path. With
``/dev/stdout`` this re-opens the container's stdout through /proc, which fails with
EACCES for a non-root user (uid 9869 under the chart) because the pipe or FIFO the
container runtime made belongs to root. So the follower writes into a FIFO that
supervisord can open, and a tiny relay started just before the exec copies the FIFO
to the stdout it inherited (no re-open needed). The relay ends once supervisord is gone.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import subprocess
import sys
from pathlib import Path

_CHUNK = 65536


def make_fifo(path: Path) -> None:
    """A fresh FIFO at ``path`` (mode 0600), replacing whatever a previous start left."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISFIFO(path.lstat().st_mode):
            path.unlink()
    if not path.exists():
        os.mkfifo(path, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _relay(path: Path, parent: int) -> None:
    # O_RDWR: the relay holds a writer itself, so a follower restart is no end of file.
    fd = os.open(path, os.O_RDWR)
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            _write_all(1, os.read(fd, _CHUNK))
        elif os.getppid() != parent:  # supervisord has exited and nothing is pending
            return


def start_stdout_relay(path: Path, environ: dict[str, str]) -> int:
    """Start the relay as a fresh interpreter; return its pid.

    A fresh process (not a fork) so that it carries only ``environ`` (already scrubbed of
    secrets) and not this process's original environment. It inherits stdout, which the
    following exec keeps as well, and runs in its own process group so that a signal to
    supervisord's group does not stop it before the last lines are through.
    """
    make_fifo(path)
    relay = subprocess.Popen(
        [sys.executable, "-m", "onerun.stdout_relay", str(path), str(os.getpid())],
        env=environ, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0,
    )
    return relay.pid


def main(argv: list[str]) -> int:
    """``python -m onerun.stdout_relay FIFO PARENT_PID``."""
    fifo, parent = Path(argv[0]), int(argv[1])
    try:
        _relay(fifo, parent)
    except OSError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
