"""``onerun logs --follow``: the log files of the front-end on the container's stdout.

oned, monitord, FireEdge and the Ruby servers write their logs to files in /var/log/one
(their stdout and stderr reach the container's stdout through supervisord's hook,
onerun/runtime/pid1.py). This follower prints each new line of those files, prefixed with the
service's name, so ``kubectl logs`` shows everything, and keeps each file bounded: past
ONERUN_LOG_MAX_BYTES it empties the file in place after reading it (every writer appends
with O_APPEND, so the next write lands at the new end).

Where it stopped reading each file is kept in <log_dir>/.onerun-logs.json (inode and
offset); ``onerun start`` records the current ends before supervisord starts, so a
restart prints neither old lines again nor misses lines written in between.
Stdlib only, and no dataclasses (it pulls in inspect): the follower stays resident for
the pod's life, so what it imports is memory (bench/bench_runtime_memory.py); entry.py
runs ``onerun logs --follow`` without click. A 0.5 s poll of a few stat() calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

from onerun.layout import Layout
from onerun.runtime.logline import format_line, split_lines

TYPE_CHECKING = False  # typing only for annotations: the follower is resident
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

STATE_FILE = ".onerun-logs.json"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
POLL_SECONDS = 0.5
SWEEP_SECONDS = 60.0  # how often files nobody follows (VM logs) are checked for size

# Files the services write themselves, and the name their lines are prefixed with.
FOLLOWED = {
    "oned.log": "oned",
    "one_xmlrpc.log": "oned",
    "monitor.log": "monitord",
    "sched.log": "sched",
    "onehem.log": "hem",
    "fireedge.log": "fireedge",
    "fireedge.error": "fireedge",
    "oneflow.log": "oneflow",
    "onegate.log": "onegate",
    "oneform.log": "oneform",
    "oneks.log": "oneks",
}


def _regular_file(path: Path) -> bool:
    """A regular file we may look at; anything else (absent, unreadable, a device or a
    FIFO someone put there) is not followed, rather than stopping the follower."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def followed_files(log_dir: Path) -> dict[Path, str]:
    """Every file to follow that exists now, with its prefix."""
    return {log_dir / name: label for name, label in FOLLOWED.items()
            if _regular_file(log_dir / name)}


def max_bytes_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    raw = environ.get("ONERUN_LOG_MAX_BYTES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_BYTES


class _Tail:
    """One followed file: its open handle, inode, read offset and an unfinished line."""

    __slots__ = ("handle", "inode", "label", "offset", "partial", "path")

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.handle: BinaryIO | None = None
        self.inode = 0
        self.partial = b""
        self.offset = 0

    def open(self, offset: int) -> bool:
        try:  # O_NONBLOCK: a FIFO put in place of a log file must not hang the follower
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return False
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            return False
        self.close()
        self.handle = handle = os.fdopen(fd, "rb")
        self.inode = status.st_ino
        size = status.st_size
        self.offset = offset if offset <= size else 0
        handle.seek(self.offset)
        self.partial = b""
        return True

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def read(self) -> list[bytes]:
        """Complete lines added since the last read."""
        if self.handle is None:
            return []
        size = os.fstat(self.handle.fileno()).st_size
        if size < self.offset:  # truncated by someone: start over
            self.handle.seek(0)
            self.offset = 0
            self.partial = b""
        data = self.handle.read()
        self.offset += len(data)
        if not data:
            return []
        chunks, self.partial = split_lines(self.partial, data)
        return chunks

    def flush_partial(self) -> list[bytes]:
        rest, self.partial = self.partial, b""
        return [rest] if rest else []


class Follower:
    """Follows the log directory; ``poll`` does one round, ``run`` loops until stopped."""

    def __init__(self, log_dir: Path, out: BinaryIO, max_bytes: int = DEFAULT_MAX_BYTES,
                 fmt: str = "text") -> None:
        self.log_dir = log_dir
        self.out = out
        self.max_bytes = max_bytes
        self.fmt = fmt
        self.tails: dict[Path, _Tail] = {}
        self._state = read_state(log_dir)
        self._last_sweep = 0.0

    def _emit(self, tail: _Tail, lines: list[bytes]) -> None:
        for raw in lines:
            self.out.write(format_line(tail.label, tail.path.name, raw, self.fmt))

    def _discover(self) -> None:
        for path, label in followed_files(self.log_dir).items():
            if path in self.tails:
                continue
            tail = _Tail(path, label)
            saved = self._state.get(str(path))
            start = 0
            with contextlib.suppress(OSError):
                if saved is not None and path.stat().st_ino == saved[0]:
                    start = saved[1]
            if tail.open(start):
                self.tails[path] = tail

    def _follow(self, tail: _Tail) -> None:
        self._emit(tail, tail.read())
        try:
            current = tail.path.stat()
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != tail.inode:  # rotated or removed
            self._emit(tail, tail.flush_partial())
            if current is None or not tail.open(0):
                tail.close()
                del self.tails[tail.path]
                return
            self._emit(tail, tail.read())
        if tail.offset > self.max_bytes:
            self._bound(tail)

    def _bound(self, tail: _Tail) -> None:
        """Empty the file we have just read in full: writers append at the new end."""
        self._emit(tail, tail.read())
        with contextlib.suppress(OSError):
            os.truncate(tail.path, 0)
            if tail.handle is not None:
                tail.handle.seek(0)
            tail.offset = 0

    def _sweep(self) -> None:
        """Bound files nobody follows (per-VM logs): they grow in the same directory."""
        with contextlib.suppress(OSError), os.scandir(self.log_dir) as entries:
            for entry in entries:
                path = Path(entry.path)
                if (path not in self.tails and entry.is_file(follow_symlinks=False)
                        and entry.stat().st_size > self.max_bytes):
                    with contextlib.suppress(OSError):
                        os.truncate(path, 0)

    def poll(self) -> None:
        """One round: new files, new lines, bounds; then the state is saved."""
        self._discover()
        for tail in list(self.tails.values()):
            self._follow(tail)
        self.out.flush()
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_SECONDS:
            self._last_sweep = now
            self._sweep()
        state = {str(t.path): [t.inode, t.offset - len(t.partial)] for t in self.tails.values()}
        if state != self._state:
            self._state = state
            write_state(self.log_dir, state)

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            self.poll()
            time.sleep(POLL_SECONDS)
        self.poll()  # what the services wrote while they stopped
        for tail in self.tails.values():
            self._emit(tail, tail.flush_partial())
        self.out.flush()


def read_state(log_dir: Path) -> dict[str, list[int]]:
    try:
        data = json.loads((log_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items()
            if isinstance(v, list) and len(v) == 2 and all(isinstance(n, int) for n in v)}


def write_state(log_dir: Path, state: dict[str, list[int]]) -> None:
    """Temp file and rename, without fsync: the state only matters within this pod."""
    target = log_dir / STATE_FILE
    tmp = target.with_name(f"{STATE_FILE}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(state))
        tmp.replace(target)


def current_ends(log_dir: Path) -> dict[str, list[int]]:
    """Inode and size of every followed file: "already shown" for the next follower."""
    state: dict[str, list[int]] = {}
    for path in followed_files(log_dir):
        with contextlib.suppress(OSError):
            status = path.stat()
            state[str(path)] = [status.st_ino, status.st_size]
    return state


USAGE = "usage: onerun logs --follow [--root R]"


def main(argv: list[str]) -> int:
    """``onerun logs --follow [--root R]``, parsed by hand (no click in a resident process);
    prints until SIGTERM or SIGINT, then what was written meanwhile."""
    root: str | None = None
    follow = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--follow":
            follow = True
        elif arg == "--root" and args:
            root = args.pop(0)
        elif arg.startswith("--root="):
            root = arg.split("=", 1)[1]
        else:
            print(f"unexpected argument {arg!r}; {USAGE}", file=sys.stderr)
            return 2
    if not follow:
        print(f"--follow is required (the only mode); {USAGE}", file=sys.stderr)
        return 2
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fmt = os.environ.get("ONERUN_LOG_FORMAT", "text")
    follower = Follower(Layout.from_env(root).log_dir, sys.stdout.buffer, max_bytes_from_env(),
                        fmt)
    follower.run(lambda: stop)
    return 0
