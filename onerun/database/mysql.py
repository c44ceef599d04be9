"""MariaDB/MySQL through PyMySQL: connecting, naming failures, and reading without writing."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import pymysql
from pymysql.connections import Connection
from pymysql.cursors import Cursor

from onerun.database.classify import (
    SLAVE_QUERY,
    USERS_QUERY,
    VERSION_QUERY,
    DbObservation,
    DbState,
    Facts,
    decide,
    encrypted_value_queries,
    is_true,
    values_at,
)
from onerun.errors import DependencyUnavailable, Problem, SettingsError
from onerun.settings import Settings

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # a hung server must not hang the start forever
UNKNOWN_DATABASE = 1049
LOST_CONNECTION = 2013  # TCP accepted, then no greeting: a server starting, or not MariaDB
ACCESS_DENIED = frozenset({1044, 1045, 1698})  # db access, password, unix_socket auth


def endpoint(settings: Settings) -> str:
    """host:port as the operator wrote them, for messages."""
    return f"{settings.db_host or 'localhost'}:{settings.db_port}"


def mysql_connect(settings: Settings, *, database: bool = True,
                  timeout: float = CONNECT_TIMEOUT,
                  read_timeout: float = READ_TIMEOUT) -> Connection[Cursor]:
    """Open a connection as DB_USER (to DB_NAME unless ``database`` is False).

    ``timeout`` bounds the TCP connect, ``read_timeout`` every later read and write
    (the login handshake included). Raises PyMySQL's errors unchanged: callers decide
    what a failure means.
    """
    host = settings.db_host or "localhost"  # settings hold the bare form (no brackets)
    password = settings.db_password.reveal() if settings.db_password is not None else ""
    return pymysql.connect(
        host=host, port=settings.db_port, user=settings.db_user, password=password,
        database=settings.db_name if database else None, connect_timeout=timeout,
        read_timeout=read_timeout, write_timeout=read_timeout, charset="utf8mb4",
        autocommit=True,
    )


def error_code(error: BaseException) -> int | None:
    """The server's or client's numeric error code of a PyMySQL error."""
    args: Sequence[Any] = getattr(error, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def scrub(text: str, settings: Settings) -> str:
    """Mask the DB password should a message ever contain it (PyMySQL's do not)."""
    if settings.db_password is not None and settings.db_password.reveal():
        return text.replace(settings.db_password.reveal(), "***")
    return text


def describe(error: BaseException, settings: Settings) -> str:
    """A short reason for a failed connection: refused, DNS failure, timeout, or the message."""
    cause = getattr(error, "original_exception", None)
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve {settings.db_host!r} (DNS: {cause.strerror or cause})"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by {endpoint(settings)}"
    if isinstance(cause, TimeoutError):
        return f"no answer from {endpoint(settings)} (connect timed out)"
    if cause is not None:
        return scrub(f"cannot connect to {endpoint(settings)} ({cause})", settings)
    args: Sequence[Any] = getattr(error, "args", ())
    message = str(args[1]) if len(args) > 1 else str(error) or type(error).__name__
    code = error_code(error)
    if code == LOST_CONNECTION:
        return f"{endpoint(settings)} took the connection but never finished the login ({message})"
    return scrub(f"{message} (error {code})" if code is not None else message, settings)


def access_denied(error: BaseException, settings: Settings) -> SettingsError:
    """The settings error for a login the server refuses: wrong DB_USER/DB_PASSWORD or grants."""
    server_says = describe(error, settings)
    if error_code(error) == 1044:
        fix = (f"grant DB_USER {settings.db_user!r} all privileges on {settings.db_name}.*"
               f" (GRANT ALL PRIVILEGES ON {settings.db_name}.* TO '{settings.db_user}'@'%'),"
               " or set DB_USER to an account that has them")
    else:
        fix = ("set DB_PASSWORD (or DB_PASSWORD_FILE) to the password of DB_USER"
               f" {settings.db_user!r} on {endpoint(settings)}, or create that account")
    return SettingsError([Problem(
        "DB_USER/DB_PASSWORD", f"MariaDB at {endpoint(settings)} denies access: {server_says}",
        fix,
    )])


def _version(cursor: Cursor, table: str, tables: frozenset[str]) -> str | None:
    """oned's own query; an error or no row means "needs bootstrap" to oned
    (``check_db_version`` in src/nebula/SystemDB.cc, OpenNebula/one)."""
    if table not in tables:
        return None
    try:
        cursor.execute(VERSION_QUERY.format(table=table))
    except pymysql.err.ProgrammingError:
        return None
    row = cursor.fetchone()
    return None if row is None or row[0] is None else str(row[0])


def read_facts(connection: Connection[Cursor], where: str, encrypted: bool = False) -> Facts:
    """Collect the readings classify needs, in a read-only session.

    ``encrypted``: also a few encrypted attribute values (onerun/onekey.py tries a key).
    """
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION READ ONLY")  # reading never writes
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema=DATABASE()"
        )
        tables = frozenset(str(row[0]) for row in cursor.fetchall())
        db_version = _version(cursor, "db_versioning", tables)
        local_db_version = _version(cursor, "local_db_versioning", tables)
        users: dict[int, str] = {}
        if "user_pool" in tables:
            cursor.execute(USERS_QUERY)
            for oid, body in cursor.fetchall():
                text = body.decode(errors="replace") if isinstance(body, bytes) else body
                users[int(oid)] = "" if text is None else str(text)
        is_slave = False
        if local_db_version is not None:
            cursor.execute(SLAVE_QUERY)
            row = cursor.fetchone()
            is_slave = row is not None and is_true(row[0])
        values: list[str] = []
        for query, paths in encrypted_value_queries(tables) if encrypted else ():
            cursor.execute(query)
            for (body,) in cursor.fetchall():
                text = body.decode(errors="replace") if isinstance(body, bytes) else body
                values.extend(values_at(None if text is None else str(text), paths))
    return Facts(
        where=where, tables=tables, db_version=db_version, local_db_version=local_db_version,
        user0_body=users.get(0), user1_body=users.get(1), is_slave=is_slave,
        encrypted_values=tuple(values),
    )


def classify_mysql(settings: Settings, *, encrypted: bool = False) -> DbObservation:
    """Classify DB_NAME on the server; "Unknown database" is EMPTY, unreachable never is."""
    where = f"database {settings.db_name} on {endpoint(settings)}"
    try:
        connection = mysql_connect(settings)
    except pymysql.err.MySQLError as error:
        code = error_code(error)
        if code == UNKNOWN_DATABASE:
            return DbObservation(
                state=DbState.EMPTY, db_version=None, local_db_version=None,
                oneadmin_password_sha256=None, oneadmin_name=None, serveradmin_present=False,
                is_slave=False, tables=frozenset(),
                detail=f"database {settings.db_name} does not exist yet (oned creates it)",
            )
        if code in ACCESS_DENIED:
            raise access_denied(error, settings) from error
        raise DependencyUnavailable(
            f"cannot read {where}: {describe(error, settings)}"
        ) from error
    try:
        return decide(read_facts(connection, where, encrypted))
    except pymysql.err.MySQLError as error:
        raise DependencyUnavailable(
            f"reading {where} failed: {describe(error, settings)}"
        ) from error
    finally:
        connection.close()
