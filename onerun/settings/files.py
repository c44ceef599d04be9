"""Reading a file a setting names (a ``*_FILE`` secret, ONERUN_CONFIG) without hanging."""

from __future__ import annotations

import os
import stat


class UnreadableFileError(Exception):
    """Why a file named by a setting cannot be used; the message never holds its content."""


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind})"


def read_regular_file(path: str, limit: int) -> bytes:
    """The bytes of ``path`` when it is, after following links, a regular file of at most
    ``limit`` bytes.

    Why: a FIFO blocks the start in open() until a writer comes, and a device such as
    /dev/zero never ends. Links are followed because Kubernetes mounts each secret as
    ``name -> ..data/name`` with ``..data`` a link to the current copy.
    """
    try:
        if reason := _not_regular(os.stat(path).st_mode):  # devices are never opened
            raise UnreadableFileError(reason)
        # O_NONBLOCK: should the path become a FIFO after the check, open() still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFileError(exc.strerror or type(exc).__name__) from exc
    try:
        if reason := _not_regular(os.fstat(fd).st_mode):
            raise UnreadableFileError(reason)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # st_size is not trusted (procfs files report 0)
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFileError(exc.strerror or type(exc).__name__) from exc
    finally:
        os.close(fd)
    if size > limit:
        raise UnreadableFileError(f"larger than {limit} bytes")
    return b"".join(chunks)
