"""Dump DB_NAME with mariadb-dump and load it back with mariadb (DB_BACKEND=mysql).

A dump is complete only when it ends with mariadb-dump's own ``-- Dump completed`` line;
onerun then appends one line of its own (``ONERUN_TRAILER``) recording DB_NAME's charset
and collation, which a restore recreates: oned refuses a database whose charset differs
from its tables' (src/sql/MySqlDB.cc, OpenNebula/one). The clients read DB_PASSWORD from
an option file only (onerun/database/mysql_client.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pymysql

from onerun.database.mysql import describe, mysql_connect
from onerun.database.mysql_client import (
    client_defaults_file,
    client_environment,
    client_tool,
    output_tail,
)
from onerun.errors import BackupError
from onerun.settings import Settings

if TYPE_CHECKING:
    from pymysql.connections import Connection
    from pymysql.cursors import Cursor

Mask = Callable[[str], str]

DUMP_TRAILER = "-- Dump completed"
ONERUN_TRAILER = "-- onerun-backup "
_TAIL_BYTES = 8192


def _schema_charset(settings: Settings) -> tuple[str | None, str | None]:
    """DB_NAME's default charset and collation, recreated on restore (oned checks them)."""
    try:
        connection: Connection[Cursor] = mysql_connect(settings, database=False)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
                    " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=%s", (settings.db_name,))
                row = cursor.fetchone()
        finally:
            connection.close()
    except pymysql.err.MySQLError as error:
        raise BackupError(f"cannot read database {settings.db_name}: {describe(error, settings)}"
                          ) from error
    return (str(row[0]), str(row[1])) if row else (None, None)


def _read_tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        return handle.read().decode(errors="replace")


def dump_mysql(settings: Settings, target: Path, *, db_version: str,
               target_version: str | None, mask: Mask) -> None:
    """mariadb-dump DB_NAME into ``target`` (already created 0600), then check it complete.

    ``mask`` hides secrets in the client's output before an error quotes it.
    """
    meta: dict[str, object] = {"db_version": db_version, "target_version": target_version,
                               "created": time.time()}
    charset, collation = _schema_charset(settings)
    dump = client_tool("mariadb-dump", "mysqldump")
    with client_defaults_file(settings) as defaults, target.open("ab") as out:
        # No --databases: the dump carries no CREATE DATABASE/USE, so restore recreates it
        # under DB_NAME with the charset recorded in the trailer.
        result = subprocess.run(
            [dump, f"--defaults-file={defaults}", "--single-transaction", "--routines",
             "--triggers", "--no-tablespaces", "--hex-blob", settings.db_name],
            stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=client_environment(), check=False,
        )
    stderr = mask(result.stderr.decode(errors="replace"))
    if result.returncode != 0:
        raise BackupError(f"{Path(dump).name} exited {result.returncode}: {output_tail(stderr)}")
    size = target.stat().st_size
    if size == 0 or DUMP_TRAILER not in _read_tail(target):
        raise BackupError(f"{Path(dump).name} wrote an incomplete dump ({size} bytes, no"
                          f" '{DUMP_TRAILER}' trailer): {output_tail(stderr)}")
    trailer = {**meta, "database": settings.db_name, "charset": charset, "collation": collation}
    with target.open("a", encoding="utf-8") as out:
        out.write(f"{ONERUN_TRAILER}{json.dumps(trailer, sort_keys=True)}\n")


def onerun_trailer(path: Path) -> dict[str, object] | None:
    """The metadata line onerun appends to its MariaDB dumps; None if absent."""
    tail = _read_tail(path)
    if DUMP_TRAILER not in tail:
        return None
    for line in reversed(tail.splitlines()):
        if line.startswith(ONERUN_TRAILER):
            with contextlib.suppress(ValueError):
                data = json.loads(line[len(ONERUN_TRAILER):])
                return data if isinstance(data, dict) else None
    return None


def mysql_backup_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole dump onerun made (said after its name), or None."""
    if onerun_trailer(path) is None:
        return ("lacks the trailer onerun writes after a complete dump"
                " (truncated, or not made by onerun)")
    return None


def restore_mysql(settings: Settings, path: Path, *, mask: Mask) -> None:
    """Replace DB_NAME by the dump ``path``: recreated empty with the recorded charset, then
    loaded with the mariadb client."""
    trailer = onerun_trailer(path) or {}
    charset, collation = trailer.get("charset"), trailer.get("collation")
    client = client_tool("mariadb", "mysql")
    name = settings.db_name  # validated by settings as a plain identifier
    create = f"CREATE DATABASE `{name}`"
    if isinstance(charset, str) and re.fullmatch(r"\w+", charset):
        create += f" CHARACTER SET {charset}"
    if isinstance(collation, str) and re.fullmatch(r"\w+", collation):
        create += f" COLLATE {collation}"
    try:
        connection: Connection[Cursor] = mysql_connect(settings, database=False)
        try:
            with connection.cursor() as cursor:
                # A clean database: tables a half-done migration added must not survive.
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cursor.execute(create)
        finally:
            connection.close()
    except pymysql.err.MySQLError as error:
        raise BackupError(f"cannot recreate database {name}: {describe(error, settings)}"
                          ) from error
    with client_defaults_file(settings) as defaults, path.open("rb") as dump:
        result = subprocess.run(
            [client, f"--defaults-file={defaults}", "--binary-mode", name],
            stdin=dump, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=client_environment(), check=False,
        )
    if result.returncode != 0:
        output = mask(result.stdout.decode(errors="replace"))
        raise BackupError(f"{Path(client).name} exited {result.returncode} loading {path}:"
                          f" {output_tail(output)}")
