"""Running the MariaDB command-line clients (mariadb-dump, mariadb) without leaking DB_PASSWORD.

The clients read the account from a 0600 option file passed as ``--defaults-file``; their
argv and environment hold no secret. onedb's own MariaDB backup, by contrast, puts the
password on mysqldump's command line and prints that command when the dump fails
(``backup`` in src/onedb/onedb_backend.rb, OpenNebula/one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onerun.errors import BackupError
from onerun.settings import Settings

_OUTPUT_LINES = 10  # of a failed client's output, quoted in the error


@contextlib.contextmanager
def client_defaults_file(settings: Settings) -> Iterator[Path]:
    """A 0600 option file with the connection and password for mariadb-dump / mariadb.

    ``--defaults-file`` (not ``--defaults-extra-file``) so no ~/.my.cnf or /etc/mysql
    setting can override the account; the password never appears in argv.
    """
    password = settings.db_password.reveal() if settings.db_password is not None else ""
    host = settings.db_host or "localhost"
    fd, name = tempfile.mkstemp(prefix="onerun-client-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # Quotes and backslashes are not allowed in DB_PASSWORD (settings), so a
            # double-quoted value is read back verbatim.
            handle.write(
                f'[client]\nuser="{settings.db_user}"\npassword="{password}"\n'
                f"host={host}\nport={settings.db_port}\nprotocol=tcp\n"
            )
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def client_tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH (MariaDB's name first, MySQL's after)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BackupError(
        f"none of {', '.join(names)} is installed; onerun needs the MariaDB client tools"
        " to back up and restore (apt-get install mariadb-client)"
    )


def client_environment() -> dict[str, str]:
    """The clients get no secret in their environment: the option file has it."""
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": tempfile.gettempdir()}


def output_tail(text: str, lines: int = _OUTPUT_LINES) -> str:
    """The last lines of a client's output, for an error message (already masked)."""
    return "\n".join(text.strip().splitlines()[-lines:])
