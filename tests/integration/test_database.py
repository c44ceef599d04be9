"""The database package against a real MariaDB (the private server) and real processes.

The MariaDB dump is the one a real oned 7.0.0 bootstrapped; partial states are derived
from it the way they arise (a version table lost, the users never created).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.mariadb import MariaDBServer
from testlib import (
    DB_FIXTURES,
    ENCRYPTED_FIXTURE_STATEMENTS,
    ENCRYPTED_FIXTURE_VALUES,
    PROJECT,
    require_shared,
)

from onerun.database import DbState, classify, mysql_connect, wait_for_database
from onerun.errors import DependencyUnavailable, SettingsError
from onerun.layout import Layout
from onerun.settings import Settings, load_settings

pytestmark = pytest.mark.mariadb

DB_USER = "oneadmin"
DB_PASSWORD = "fixturedbpass"  # oned's DB password when it wrote the mariadb-bootstrapped dump
FIXTURE_SHA256 = hashlib.sha256(b"fixturepass").hexdigest()
CANARY = "canary-Q7vZ2mK9xP4w"  # a wrong password that must show up nowhere
LAYOUT = Layout(Path("/nonexistent-root"))  # MariaDB needs no files


def unused_port() -> int:
    """A port nothing listens on: bound to port 0, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mysql_settings(port: int, name: str = "opennebula", *, password: str = DB_PASSWORD,
                   timeout: float = 30) -> Settings:
    return load_settings({
        "DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": str(port),
        "DB_USER": DB_USER, "DB_PASSWORD": password, "DB_NAME": name,
        "ONERUN_DB_WAIT_TIMEOUT": str(timeout),
    })


def load_fixture(server: MariaDBServer, name: str) -> Settings:
    """Database ``name`` holding the dump of a bootstrapped oned 7.0.0, DB_USER granted."""
    dump = require_shared(DB_FIXTURES / "mariadb-bootstrapped" / "opennebula.sql")
    server.create_database(name, DB_USER, DB_PASSWORD)
    server.load_dump(name, dump)
    return mysql_settings(server.port, name)


def server_secret_sha256() -> str:
    """sha256 hex of the plain secret in the dump's oneflow_auth ("serveradmin:<secret>")."""
    auth = DB_FIXTURES / "mariadb-bootstrapped" / "dot-one" / "oneflow_auth"
    text = require_shared(auth).read_text().removesuffix("\n")
    user, _, secret = text.partition(":")
    assert user == "serveradmin" and secret
    return hashlib.sha256(secret.encode()).hexdigest()


def checksums(server: MariaDBServer, name: str) -> dict[str, int | None]:
    """CHECKSUM TABLE of every table: any write by classify would change one."""
    connection = server.connect(name)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW TABLES")
            tables = [str(row[0]) for row in cursor.fetchall()]
            cursor.execute("CHECKSUM TABLE " + ", ".join(f"`{table}`" for table in tables))
            return {str(row[0]): row[1] for row in cursor.fetchall()}
    finally:
        connection.close()


def execute(server: MariaDBServer, name: str, statement: str) -> None:
    connection = server.connect(name)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


# -- classify ------------------------------------------------------------------------------

def test_bootstrapped_dump(mariadb_server: MariaDBServer) -> None:
    settings = load_fixture(mariadb_server, "one_bootstrapped")
    before = checksums(mariadb_server, "one_bootstrapped")
    observation = classify(settings, LAYOUT)
    assert observation.state is DbState.BOOTSTRAPPED
    assert (observation.db_version, observation.local_db_version) == ("7.0.0", "7.0.0")
    assert observation.oneadmin_password_sha256 == FIXTURE_SHA256
    assert observation.oneadmin_name == "oneadmin"
    assert observation.serveradmin_present and not observation.is_slave
    assert observation.serveradmin_password_sha256 == server_secret_sha256()
    assert {"db_versioning", "local_db_versioning", "user_pool"} <= observation.tables
    assert checksums(mariadb_server, "one_bootstrapped") == before


def test_key_fingerprint_and_encrypted_values_are_read(mariadb_server: MariaDBServer) -> None:
    name = "one_encrypted"
    settings = load_fixture(mariadb_server, name)
    for statement in ENCRYPTED_FIXTURE_STATEMENTS:
        execute(mariadb_server, name, statement.format(**ENCRYPTED_FIXTURE_VALUES))
    before = checksums(mariadb_server, name)
    values = ENCRYPTED_FIXTURE_VALUES
    assert classify(settings, LAYOUT).one_key_fingerprint == values["fingerprint"]
    asked = classify(settings, LAYOUT, encrypted=True)
    assert sorted(asked.encrypted_values) == sorted([values["user"], values["datastore"],
                                                     values["vm"]])
    assert checksums(mariadb_server, name) == before


def test_dump_without_db_versioning_is_partial_tables(mariadb_server: MariaDBServer) -> None:
    settings = load_fixture(mariadb_server, "one_partial_tables")
    execute(mariadb_server, "one_partial_tables", "DROP TABLE db_versioning")
    observation = classify(settings, LAYOUT)
    assert observation.state is DbState.PARTIAL_TABLES
    assert "table db_versioning is missing" in observation.detail


def test_dump_without_users_is_partial_users(mariadb_server: MariaDBServer) -> None:
    settings = load_fixture(mariadb_server, "one_partial_users")
    execute(mariadb_server, "one_partial_users", "DELETE FROM user_pool")
    observation = classify(settings, LAYOUT)
    assert observation.state is DbState.PARTIAL_USERS
    assert observation.db_version == "7.0.0"
    assert not observation.serveradmin_present
    assert observation.serveradmin_password_sha256 is None


def test_empty_database_is_empty(mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_empty", DB_USER, DB_PASSWORD)
    observation = classify(mysql_settings(mariadb_server.port, "one_empty"), LAYOUT)
    assert observation.state is DbState.EMPTY
    assert observation.tables == frozenset()
    assert "no OpenNebula tables" in observation.detail


def test_unknown_database_is_empty_and_not_created(mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_absent", DB_USER, DB_PASSWORD)
    mariadb_server.drop_database("one_absent")  # the grant stays: error 1049, not 1044
    observation = classify(mysql_settings(mariadb_server.port, "one_absent"), LAYOUT)
    assert observation.state is DbState.EMPTY
    assert observation.detail == "database one_absent does not exist yet (oned creates it)"
    connection = mariadb_server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW DATABASES LIKE 'one_absent'")
            assert cursor.fetchall() == ()
    finally:
        connection.close()


def test_unreachable_is_never_empty() -> None:
    with pytest.raises(DependencyUnavailable, match="connection refused"):
        classify(mysql_settings(unused_port()), LAYOUT)


def test_classify_with_a_wrong_password_is_a_settings_error(mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_denied", DB_USER, DB_PASSWORD)
    settings = mysql_settings(mariadb_server.port, "one_denied", password=CANARY)
    with pytest.raises(SettingsError, match="DB_PASSWORD") as raised:
        classify(settings, LAYOUT)
    assert CANARY not in str(raised.value)


def test_mysql_connect_is_usable_by_other_modules(mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_connect", DB_USER, DB_PASSWORD)
    connection = mysql_connect(mysql_settings(mariadb_server.port, "one_connect"),
                               database=False, timeout=2)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DATABASE(), CURRENT_USER()")
            database, user = cursor.fetchone() or (None, "")
            assert database is None and str(user).split("@")[0] == DB_USER
    finally:
        connection.close()


# -- wait ----------------------------------------------------------------------------------

def test_wait_returns_when_the_server_answers(mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_wait", DB_USER, DB_PASSWORD)
    lines: list[str] = []
    wait_for_database(mysql_settings(mariadb_server.port, "one_wait"), LAYOUT, lines.append)
    assert len(lines) == 1 and "accepts logins" in lines[0]


def test_wait_counts_an_unknown_database_as_ready(mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_later", DB_USER, DB_PASSWORD)
    mariadb_server.drop_database("one_later")
    lines: list[str] = []
    wait_for_database(mysql_settings(mariadb_server.port, "one_later", timeout=5), LAYOUT,
                      lines.append)
    assert any("does not exist yet" in line for line in lines)


def test_wait_returns_at_once_for_sqlite() -> None:
    lines: list[str] = []
    wait_for_database(load_settings({}), LAYOUT, lines.append)
    assert lines == []


@pytest.fixture
def server_down_for_5s(mariadb_server: MariaDBServer) -> Iterator[MariaDBServer]:
    """Stop the server now and start it again (same port) 5 s later, in the background."""
    mariadb_server.create_database("one_downup", DB_USER, DB_PASSWORD)
    mariadb_server.stop()
    restarted = threading.Event()

    def start_later() -> None:
        time.sleep(5)
        mariadb_server.start()
        restarted.set()

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    try:
        yield mariadb_server
    finally:
        thread.join()
        mariadb_server.start()  # no-op when it runs; restores it if the thread failed


def test_wait_proceeds_when_the_server_comes_up(server_down_for_5s: MariaDBServer) -> None:
    settings = mysql_settings(server_down_for_5s.port, "one_downup", timeout=60)
    lines: list[str] = []
    started = time.monotonic()
    wait_for_database(settings, LAYOUT, lines.append)
    elapsed = time.monotonic() - started
    assert elapsed >= 4.5
    refused = [line for line in lines if "connection refused" in line]
    assert len(refused) == 1, lines  # one line per change of reason, not one per attempt
    assert "accepts logins" in lines[-1]


def test_wait_gives_up_at_the_deadline() -> None:
    settings = mysql_settings(unused_port(), password=CANARY, timeout=2)
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable) as raised:
        wait_for_database(settings, LAYOUT, lines.append)
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 10
    assert raised.value.exit_code == 4
    assert "ONERUN_DB_WAIT_TIMEOUT=2s" in str(raised.value)
    assert "connection refused" in str(raised.value)
    assert len(lines) == 1
    assert all(CANARY not in text for text in [*lines, str(raised.value)])


def test_wait_with_a_wrong_password_is_a_settings_error_after_the_grace(
        mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_denied", DB_USER, DB_PASSWORD)
    settings = mysql_settings(mariadb_server.port, "one_denied", password=CANARY, timeout=60)
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(SettingsError) as raised:
        wait_for_database(settings, LAYOUT, lines.append)
    elapsed = time.monotonic() - started
    assert 5 <= elapsed < 20  # the grace, not the 60 s deadline
    message = str(raised.value)
    assert raised.value.exit_code == 2
    assert "DB_PASSWORD" in message and "Access denied" in message
    assert all(CANARY not in text for text in [*lines, message])


def test_wait_denied_until_a_short_deadline_is_a_settings_error(
        mariadb_server: MariaDBServer) -> None:
    mariadb_server.create_database("one_denied", DB_USER, DB_PASSWORD)
    settings = mysql_settings(mariadb_server.port, "one_denied", password=CANARY, timeout=1)
    with pytest.raises(SettingsError, match="DB_PASSWORD"):
        wait_for_database(settings, LAYOUT, lambda _line: None)


# -- signals -------------------------------------------------------------------------------

WAITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from onerun.database import wait_for_database
    from onerun.errors import OnerunError
    from onerun.layout import Layout
    from onerun.settings import load_settings

    settings = load_settings({
        "DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": sys.argv[1],
        "DB_PASSWORD": "fixturedbpass", "ONERUN_DB_WAIT_TIMEOUT": "300",
    })
    try:
        wait_for_database(settings, Layout(Path("/")), lambda line: print(line, flush=True))
    except OnerunError as error:
        print(error, file=sys.stderr)
        sys.exit(error.exit_code)
""")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that completes TCP connects but never sends MariaDB's greeting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("target", ["refused", "silent"])
def test_a_signal_ends_the_wait_at_once(
        signum: signal.Signals, target: str, silent_server: int) -> None:
    """SIGTERM/SIGINT during the wait: exit 143 within about a second, whatever it waits on."""
    port = silent_server if target == "silent" else unused_port()
    process = subprocess.Popen(
        [sys.executable, "-c", WAITER, str(port)], cwd=PROJECT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # logged inside the wait: the handlers are in place
        assert "waiting for the database" in first
        time.sleep(0.3)  # in a backoff sleep or in a hanging attempt
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
    assert code == 143
    assert elapsed < 1.5
    assert process.stderr is not None
    assert f"stopped by {signum.name}" in process.stderr.read()
