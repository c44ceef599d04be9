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
import errno
import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

from onerun.errors import OnerunError

_CHUNK = 65536
READY_TIMEOUT = 10.0  # seconds for the relay's interpreter to start and open the FIFO


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
        env=environ, stdin=subprocess.DEVNULL, process_group=0,
    )
    _wait_for_reader(path, relay)
    return relay.pid


def _wait_for_reader(path: Path, relay: subprocess.Popen[bytes]) -> None:
    """Return once the relay reads the FIFO: supervisord's open of a FIFO without a reader
    would block it for good (no program spawned, SIGTERM ignored)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        if relay.poll() is not None or time.monotonic() > deadline:
            relay.kill()
            raise OnerunError(f"the log relay for {path} did not start; "
                              "supervisord would block on it, so the start stops here")
        time.sleep(0.02)


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
