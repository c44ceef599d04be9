"""Read an sqlite one.db without ever creating or changing it (read-only URI, stdlib sqlite3)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from onerun.database.classify import (
    SLAVE_QUERY,
    USERS_QUERY,
    VERSION_QUERY,
    DbObservation,
    DbState,
    Facts,
    decide,
    is_true,
)
from onerun.errors import UnsafeStateError


def _version(connection: sqlite3.Connection, table: str, tables: frozenset[str]) -> str | None:
    """oned's own query; an error or no row means "needs bootstrap" to oned (reference 2.3)."""
    if table not in tables:
        return None
    try:
        row = connection.execute(VERSION_QUERY.format(table=table)).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else str(row[0])


def read_facts(path: Path) -> Facts:
    """Collect the readings classify needs; the file is opened read-only (mode=ro)."""
    where = str(path)
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as connection:
            tables = frozenset(
                str(row[0]) for row in
                connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            )
            db_version = _version(connection, "db_versioning", tables)
            local_db_version = _version(connection, "local_db_versioning", tables)
            users: dict[int, str | None] = {}
            if "user_pool" in tables:
                for oid, body in connection.execute(USERS_QUERY):
                    users[int(oid)] = None if body is None else str(body)
            is_slave = False
            if local_db_version is not None:
                row = connection.execute(SLAVE_QUERY).fetchone()
                is_slave = row is not None and is_true(row[0])
    except sqlite3.Error as error:
        raise UnsafeStateError(
            f"{where} cannot be read as an sqlite database ({error})",
            "check that the file is an OpenNebula one.db readable by oneadmin, restore it"
            " from a backup, or move it away to start a new cloud",
        ) from error
    return Facts(
        where=where, tables=tables, db_version=db_version, local_db_version=local_db_version,
        user0_body=(users[0] or "") if 0 in users else None,
        user1_body=(users[1] or "") if 1 in users else None, is_slave=is_slave,
    )


def classify_sqlite(path: Path) -> DbObservation:
    """Classify one.db; an absent file is EMPTY (oned creates it)."""
    if not path.exists():
        return DbObservation(
            state=DbState.EMPTY, db_version=None, local_db_version=None,
            oneadmin_password_sha256=None, oneadmin_name=None, serveradmin_present=False,
            is_slave=False, tables=frozenset(), detail=f"{path} does not exist",
        )
    return decide(read_facts(path))
