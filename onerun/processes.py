"""Whether an oned runs on this volume: read from its lock file and /proc. Stdlib only."""

from __future__ import annotations

import os
from pathlib import Path

from onerun.layout import Layout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _oned_processes(layout: Layout) -> list[int]:
    """Processes running the layout's oned; in the image (root /) also any process named oned.

    Under a test root only that root's oned counts, so other roots' stand-ins do not.
    """
    binary = str(layout.binary("/usr/bin/oned"))
    any_oned = layout.root == Path("/")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:2]
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if (any_oned and comm == "oned") or binary.encode() in argv:
            found.append(int(entry.name))
    return found


def oned_running(layout: Layout) -> str | None:
    """Why oned may be running (None when provably stopped).

    oned creates /var/lock/one/one empty with O_EXCL and removes it on a clean exit
    (src/nebula/oned.cc in OpenNebula/one); a lock without a running oned is stale. A pid
    written in the lock (by a wrapper) is checked as well.
    """
    try:
        content = layout.lock_file.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    if content.isdigit() and int(content) != os.getpid() and _pid_alive(int(content)):
        return f"{layout.lock_file} is held by running process {content}"
    running = _oned_processes(layout)
    if running:
        return f"{layout.lock_file} exists and oned runs (pid {', '.join(map(str, running))})"
    return None
