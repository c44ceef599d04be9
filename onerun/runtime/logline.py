"""One log line as it reaches the container's stdout: ``[service] text``, or with
ONERUN_LOG_FORMAT=json ``{"service", "file", "msg"}``.

Shared by the follower of log files (onerun/runtime/logs.py) and supervisord's hook, which
prints the programs' own stdout and stderr (onerun/runtime/pid1.py). Stdlib only.
"""

from __future__ import annotations

import json

MAX_LINE = 64 * 1024  # a longer line without a newline is printed in pieces


def split_lines(partial: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines in ``partial + data`` and what is left of an unfinished one."""
    chunks = (partial + data).split(b"\n")
    rest = chunks.pop()
    while len(rest) > MAX_LINE:
        chunks.append(rest[:MAX_LINE])
        rest = rest[MAX_LINE:]
    return chunks, rest


def format_line(service: str, file: str, raw: bytes, fmt: str) -> bytes:
    """The line to print for ``raw`` (without its newline); empty for a blank line."""
    text = raw.replace(b"\x00", b"").decode("utf-8", errors="replace").rstrip("\r")
    if not text:
        return b""
    if fmt == "json":
        line = json.dumps({"service": service, "file": file, "msg": text})
    else:
        line = f"[{service}] {text}"
    return line.encode("utf-8", errors="replace") + b"\n"
