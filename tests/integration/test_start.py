"""The fault matrix end to end: `onerun start` against real sqlite files and a real MariaDB.

Each row runs the real command (a subprocess, as the image's ENTRYPOINT does), checks the
exit code and the message, that nothing on the volume or in the database was deleted or
rewritten when it refuses, and that `onerun start --dry-run` reports the same decision
and exit code. Databases are the real ones oned 7.0.0 wrote (../shared/fixtures).
Rows that proceed exec a real supervisord; the test stops it with SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testlib import (
    DB_FIXTURES,
    crash_inside_transaction,
    grant_traverse,
    require_shared,
    restore_modes,
    stop_process_tree,
)

from onerun.layout import Layout

FIXTURE_PASSWORD = "fixturepass"  # one_auth of the fixture databases
FIXTURE_DB_PASSWORD = "fixturedbpass"
SERVICE_AUTH = ("sunstone_auth", "onegate_auth", "oneflow_auth")


@dataclass
class Scenario:
    """A throwaway root plus the environment of one start."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    db_snapshot: Callable[[], str] = lambda: ""

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def run(self, *extra: str, dry_run: bool = False, timeout: float = 60) -> Any:
        args = [sys.executable, "-m", "onerun", "start", "--root", str(self.root)]
        if dry_run:
            args.append("--dry-run")
        return subprocess.run([*args, *extra], env=self.full_env(), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def full_env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **self.env}


def volume_snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file under the volume (and /etc-less runtime dirs)."""
    result = {}
    base = root / "var/lib/one"
    for path in sorted(base.rglob("*")) if base.exists() else []:
        if path.is_file():
            result[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


@pytest.fixture
def base_root(make_root: Callable[..., Path]) -> Iterator[Path]:
    """A root with upstream 7.0.0 configs and the image version files of a 7.0.2 image,
    reachable by oneadmin (supervisord's programs run as oneadmin and read it)."""
    root = make_root("7.0.0", image_release="7.0.2", image_db_version="7.0.0")
    changed = grant_traverse([root / "usr"])
    yield root
    restore_modes(changed)


def put_dot_one(root: Path, source: Path, names: tuple[str, ...]) -> None:
    dot_one = root / "var/lib/one/.one"
    dot_one.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source / name, dot_one / name)


def record_completed_start(root: Path) -> None:
    state = root / "var/lib/one/.onerun"
    state.mkdir(parents=True, exist_ok=True)
    (state / "last-start.json").write_text(
        '{"opennebula_version": "7.0.2", "db_version": "7.0.0", "recorded_at": 0}\n')


# --- the two backends ---------------------------------------------------------------------


class Backend:
    """Puts a database in a given state for a scenario: EMPTY, BOOTSTRAPPED, PARTIAL_*."""

    name = ""

    def prepare(self, scenario: Scenario, state: str) -> None:
        raise NotImplementedError

    def execute(self, scenario: Scenario, statement: str, *params: str) -> None:
        """Change the prepared database the way oned would have (``%s`` placeholders)."""
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def execute(self, scenario: Scenario, statement: str, *params: str) -> None:
        with closing(sqlite3.connect(scenario.root / "var/lib/one/one.db")) as db:
            db.execute(statement.replace("%s", "?"), params)
            db.commit()

    def prepare(self, scenario: Scenario, state: str) -> None:
        sources = {
            "BOOTSTRAPPED": DB_FIXTURES / "sqlite-bootstrapped/one.db",
            "PARTIAL_TABLES": DB_FIXTURES / "sqlite-partial-tables/one.db",
            "PARTIAL_USERS": DB_FIXTURES / "sqlite-partial-users/one.db",
        }
        if state != "EMPTY":
            target = scenario.root / "var/lib/one/one.db"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(require_shared(sources[state]), target)
        scenario.db_snapshot = lambda: (
            hashlib.sha256((scenario.root / "var/lib/one/one.db").read_bytes()).hexdigest()
            if (scenario.root / "var/lib/one/one.db").exists() else "absent")


class MariaDBBackend(Backend):
    name = "mysql"

    def __init__(self, server: Any) -> None:
        self.server = server

    def execute(self, scenario: Scenario, statement: str, *params: str) -> None:
        with self.server.connect(scenario.env["DB_NAME"]) as conn, conn.cursor() as cursor:
            cursor.execute(statement.replace("||", ","), params)
            conn.commit()

    def prepare(self, scenario: Scenario, state: str) -> None:
        name = f"one_{uuid.uuid4().hex[:10]}"
        self.server.create_database(name, "oneadmin", FIXTURE_DB_PASSWORD)
        if state != "EMPTY":
            dump = require_shared(DB_FIXTURES / "mariadb-bootstrapped/opennebula.sql")
            self.server.load_dump(name, dump)
            with self.server.connect(name) as conn, conn.cursor() as cursor:
                if state == "PARTIAL_TABLES":
                    cursor.execute("DROP TABLE db_versioning")
                elif state == "PARTIAL_USERS":
                    cursor.execute("DELETE FROM user_pool")
                conn.commit()
        scenario.env.update({
            "DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": str(self.server.port),
            "DB_USER": "oneadmin", "DB_PASSWORD": FIXTURE_DB_PASSWORD, "DB_NAME": name,
        })

        def snapshot() -> str:
            with self.server.connect(name) as conn, conn.cursor() as cursor:
                cursor.execute("SHOW TABLES")
                tables = sorted(row[0] for row in cursor.fetchall())
                sums = []
                for table in tables:
                    cursor.execute(f"CHECKSUM TABLE `{table}`")
                    sums.append(f"{table}={cursor.fetchone()[1]}")
            return ",".join(sums)

        scenario.db_snapshot = snapshot


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend()
    return MariaDBBackend(request.getfixturevalue("mariadb_server"))


def dot_one_source(backend: Backend) -> Path:
    sub = "sqlite-bootstrapped" if backend.name == "sqlite" else "mariadb-bootstrapped"
    return require_shared(DB_FIXTURES / sub / "dot-one")


# --- refusals: exit code, message, nothing changed, dry run agrees ------------------------


def assert_refused_unchanged(scenario: Scenario, code: int, needle: str) -> None:
    before_volume = volume_snapshot(scenario.root)
    before_db = scenario.db_snapshot()
    dry = scenario.run(dry_run=True)
    real = scenario.run()
    assert real.returncode == code, real.stderr
    assert needle in real.stderr
    assert dry.returncode == code, dry.stdout + dry.stderr
    assert "decision: refuse" in dry.stdout and needle in dry.stdout
    assert volume_snapshot(scenario.root) == before_volume
    assert scenario.db_snapshot() == before_db
    assert not (scenario.root / "run/onerun/supervisord.conf").exists()


def test_db_bootstrapped_but_volume_empty_is_refused(base_root: Path, backend: Backend) -> None:
    scenario = Scenario(base_root, {"ONEADMIN_PASSWORD": FIXTURE_PASSWORD})
    backend.prepare(scenario, "BOOTSTRAPPED")
    assert_refused_unchanged(scenario, 3, "one_key")


def test_one_key_missing_with_bootstrapped_db_is_refused(base_root: Path,
                                                         backend: Backend) -> None:
    scenario = Scenario(base_root)
    backend.prepare(scenario, "BOOTSTRAPPED")
    put_dot_one(base_root, dot_one_source(backend), ("one_auth", *SERVICE_AUTH))
    assert_refused_unchanged(scenario, 3, "one_key")


@pytest.mark.parametrize("content", ["", "\n", "too-short-a-key\n"])
def test_empty_or_short_one_key_with_bootstrapped_db_is_refused(
        base_root: Path, backend: Backend, content: str) -> None:
    """oned would encrypt with an empty key or read past a short one (AES-256 key = its first 32
    bytes: src/common/NebulaUtil.cc in OpenNebula/one)."""
    scenario = Scenario(base_root)
    backend.prepare(scenario, "BOOTSTRAPPED")
    put_dot_one(base_root, dot_one_source(backend), ("one_auth", *SERVICE_AUTH))
    (base_root / "var/lib/one/.one/one_key").write_text(content)
    assert_refused_unchanged(scenario, 3, "one_key")


def test_empty_db_on_a_volume_that_ran_a_cloud_is_refused(base_root: Path,
                                                          backend: Backend) -> None:
    scenario = Scenario(base_root)
    backend.prepare(scenario, "EMPTY")
    put_dot_one(base_root, dot_one_source(backend), ("one_key", "one_auth", *SERVICE_AUTH))
    record_completed_start(base_root)
    assert_refused_unchanged(scenario, 3, "ONERUN_ACCEPT_EMPTY_DB")


def test_truncated_start_record_with_empty_db_is_refused(base_root: Path,
                                                         backend: Backend) -> None:
    """A record cut short (full disk, crash) still says this volume ran a cloud."""
    scenario = Scenario(base_root)
    backend.prepare(scenario, "EMPTY")
    put_dot_one(base_root, dot_one_source(backend), ("one_key", "one_auth", *SERVICE_AUTH))
    record_completed_start(base_root)
    marker = base_root / "var/lib/one/.onerun/last-start.json"
    marker.write_bytes(marker.read_bytes()[:20])
    assert_refused_unchanged(scenario, 3, "ONERUN_ACCEPT_EMPTY_DB")


def another_installations_volume(root: Path, backend: Backend,
                                 kinds: tuple[str, ...] = ("one_key", "service auth",
                                                           "ssh key", "datastore")) -> None:
    """What a volume that ran a cloud under another image holds (no onerun records)."""
    if "one_key" in kinds:
        put_dot_one(root, dot_one_source(backend), ("one_key",))
    if "service auth" in kinds:
        put_dot_one(root, dot_one_source(backend), SERVICE_AUTH)
    if "ssh key" in kinds:
        ssh = root / "var/lib/one/.ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        (ssh / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n")
    if "datastore" in kinds:
        image = root / "var/lib/one/datastores/1/5e1f0c2a9b"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"an image of another installation")


def test_empty_db_on_a_volume_another_installation_used_is_refused(
        base_root: Path, backend: Backend) -> None:
    """A migrated volume and a mistyped DB_NAME: no auth file goes, no second cloud starts."""
    scenario = Scenario(base_root)
    backend.prepare(scenario, "EMPTY")
    another_installations_volume(base_root, backend)
    assert_refused_unchanged(scenario, 3, "ONERUN_ACCEPT_EMPTY_DB")
    scenario.env["ONERUN_ACCEPT_EMPTY_DB"] = "1"
    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0 and "decision: proceed" in dry.stdout, dry.stdout + dry.stderr


@pytest.mark.parametrize("kind", ["one_key", "service auth", "ssh key", "datastore"])
def test_each_trace_of_another_installation_counts(base_root: Path, kind: str) -> None:
    scenario = Scenario(base_root)
    SqliteBackend().prepare(scenario, "EMPTY")
    another_installations_volume(base_root, SqliteBackend(), (kind,))
    assert_refused_unchanged(scenario, 3, "ONERUN_ACCEPT_EMPTY_DB")


def test_partial_users_on_a_volume_another_installation_used_is_refused(
        base_root: Path, backend: Backend) -> None:
    scenario = Scenario(base_root, {"ONEADMIN_PASSWORD": "New-Admin-Pass-1"})
    backend.prepare(scenario, "PARTIAL_USERS")
    another_installations_volume(base_root, backend)
    assert_refused_unchanged(scenario, 3, "ONERUN_ACCEPT_EMPTY_DB")


def test_partial_tables_is_refused(base_root: Path, backend: Backend) -> None:
    scenario = Scenario(base_root)
    backend.prepare(scenario, "PARTIAL_TABLES")
    put_dot_one(base_root, dot_one_source(backend), ("one_key", "one_auth"))
    assert_refused_unchanged(scenario, 3, "restore a backup")


def test_wrong_oneadmin_password_is_refused(base_root: Path, backend: Backend) -> None:
    scenario = Scenario(base_root, {"ONEADMIN_PASSWORD": "Wrong-Password-1"})
    backend.prepare(scenario, "BOOTSTRAPPED")
    put_dot_one(base_root, dot_one_source(backend), ("one_key", "one_auth", *SERVICE_AUTH))
    assert_refused_unchanged(scenario, 3, "ONEADMIN_PASSWORD")
    assert "Wrong-Password-1" not in scenario.run().stderr


# --- ONE_KEY on a key-less volume: it must belong to the database --------------------------

WRONG_KEY = "0123456789abcdef" * 4  # a well-formed key of another cloud


def fixture_key(backend: Backend) -> str:
    return (dot_one_source(backend) / "one_key").read_text().split()[0]


def encrypt_as_oned(key: str, plain: str) -> str:
    """oned's aes256cbc_encrypt (src/common/NebulaUtil.cc): AES-256-CBC, the key's first 32
    bytes, a zero IV, PKCS#7 padding, base64. Done by the openssl CLI, independent of onerun
    (the key on its argv is a test fixture's)."""
    done = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", key.encode()[:32].hex(), "-iv", "0" * 32,
         "-base64", "-A"], input=plain.encode(), capture_output=True, check=True)
    return done.stdout.decode().strip()


def key_fingerprint(key: str) -> str:
    """What onerun records in oneadmin's template (docs/start.md): never the key itself."""
    return hashlib.sha256(b"onerun one_key fingerprint v1\0" + key.encode()).hexdigest()


def add_to_oneadmin_template(scenario: Scenario, backend: Backend, name: str,
                             value: str) -> None:
    backend.execute(scenario, "UPDATE user_pool SET body = REPLACE(body, '<TEMPLATE>', "
                              "CONCAT('<TEMPLATE>', %s)) WHERE oid = 0"
                    if backend.name == "mysql" else
                    "UPDATE user_pool SET body = REPLACE(body, '<TEMPLATE>', '<TEMPLATE>' || %s)"
                    " WHERE oid = 0", f"<{name}><![CDATA[{value}]]></{name}>")


def key_less_volume(base_root: Path, backend: Backend, key: str, **env: str) -> Scenario:
    """A bootstrapped DB and a volume that lost its one_key (or came from another image)."""
    scenario = Scenario(base_root, {"ONE_KEY": key, **env})
    backend.prepare(scenario, "BOOTSTRAPPED")
    put_dot_one(base_root, dot_one_source(backend), ("one_auth", *SERVICE_AUTH))
    return scenario


def test_a_one_key_nothing_proves_is_refused_unless_trusted(base_root: Path,
                                                            backend: Backend) -> None:
    """The chart makes up a ONE_KEY when none is set: over an existing database that key
    would encrypt with the wrong key for good. Nothing proves it here (no fingerprint, no
    encrypted attribute): refused, and nothing written, unless the operator trusts it."""
    scenario = key_less_volume(base_root, backend, fixture_key(backend))
    assert_refused_unchanged(scenario, 3, "ONERUN_TRUST_ONE_KEY=1")
    assert fixture_key(backend) not in scenario.run().stderr
    scenario.env["ONERUN_TRUST_ONE_KEY"] = "1"
    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0 and "decision: proceed" in dry.stdout, dry.stdout + dry.stderr


def test_an_encrypted_attribute_refuses_a_wrong_key_and_proves_the_right_one(
        base_root: Path, backend: Backend) -> None:
    scenario = key_less_volume(base_root, backend, WRONG_KEY, ONERUN_TRUST_ONE_KEY="1")
    add_to_oneadmin_template(scenario, backend, "SSH_PRIVATE_KEY", encrypt_as_oned(
        fixture_key(backend), "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n"))
    assert_refused_unchanged(scenario, 3, "ONE_KEY")  # trusting a disproved key is no way out
    scenario.env["ONE_KEY"] = fixture_key(backend)
    del scenario.env["ONERUN_TRUST_ONE_KEY"]
    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0 and "decision: proceed" in dry.stdout, dry.stdout + dry.stderr
    assert "decrypts" in dry.stdout


def test_the_recorded_key_fingerprint_decides(base_root: Path, backend: Backend) -> None:
    scenario = key_less_volume(base_root, backend, WRONG_KEY)
    add_to_oneadmin_template(scenario, backend, "ONERUN_ONE_KEY_FINGERPRINT",
                             key_fingerprint(fixture_key(backend)))
    assert_refused_unchanged(scenario, 3, "ONE_KEY")
    scenario.env["ONE_KEY"] = fixture_key(backend)
    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0 and "decision: proceed" in dry.stdout, dry.stdout + dry.stderr
    # A volume whose own one_key is another cloud's is refused the same way.
    del scenario.env["ONE_KEY"]
    (base_root / "var/lib/one/.one/one_key").write_text(WRONG_KEY + "\n")
    assert_refused_unchanged(scenario, 3, "one_key")


# --- rows that proceed: a real supervisord comes up ----------------------------------------


@dataclass
class Running:
    process: subprocess.Popen[str]
    output: list[str]


@pytest.fixture
def start_until_supervisord(oneadmin_user: Any) -> Iterator[Callable[[Scenario], Running]]:
    """Run the real `onerun start`, wait until supervisord answers on its socket, stop it."""
    started: list[Running] = []

    def launch(scenario: Scenario) -> Running:
        process = subprocess.Popen(
            [sys.executable, "-m", "onerun", "start", "--root", str(scenario.root)],
            env=scenario.full_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        running = Running(process, [])
        started.append(running)
        sock = scenario.layout.supervisor_sock
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sock.exists():
            if process.poll() is not None:
                running.output.append(process.stdout.read() if process.stdout else "")
                pytest.fail(f"onerun start exited {process.returncode}: {running.output}")
            time.sleep(0.1)
        assert sock.exists(), "supervisord did not come up"
        return running

    yield launch
    for running in started:
        if running.process.poll() is None:
            running.output.append(stop_process_tree(running.process) or "")


def stop(running: Running) -> str:
    running.output.append(stop_process_tree(running.process) or "")
    return "".join(running.output)


def oned_died_during_its_bootstrap(root: Path, backend: Backend) -> None:
    """What oned leaves when it dies bootstrapping: one_key (written before the DB is
    touched, src/nebula/Nebula.cc) and the service auth files written so far
    (src/um/UserPool.cc)."""
    put_dot_one(root, dot_one_source(backend), ("one_key", "sunstone_auth", "onegate_auth"))


def test_interrupted_first_bootstrap_that_onerun_started_is_cleaned_up(
        base_root: Path, backend: Backend,
        start_until_supervisord: Callable[[Scenario], Running]) -> None:
    """The first start records that it began a bootstrap; after oned died in it, the next
    start recognises its own leftovers and removes the service auth files oned refuses."""
    scenario = Scenario(base_root)
    backend.prepare(scenario, "EMPTY")
    stop(start_until_supervisord(scenario))  # the first start; oned "dies" in its bootstrap
    oned_died_during_its_bootstrap(base_root, backend)
    one_auth = (base_root / "var/lib/one/.one/one_auth").read_text()
    key_before = (base_root / "var/lib/one/.one/one_key").read_bytes()
    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0 and "decision: proceed" in dry.stdout, dry.stdout + dry.stderr
    running = start_until_supervisord(scenario)
    dot_one = base_root / "var/lib/one/.one"
    assert not any((dot_one / name).exists() for name in SERVICE_AUTH)
    assert (dot_one / "one_key").read_bytes() == key_before  # not ours to change
    assert (dot_one / "one_auth").read_text() == one_auth  # kept
    output = stop(running)
    assert "removed" in output and "sunstone_auth" in output


def test_partial_users_of_onerun_s_own_bootstrap_proceeds(
        base_root: Path, backend: Backend,
        start_until_supervisord: Callable[[Scenario], Running]) -> None:
    scenario = Scenario(base_root, {"ONEADMIN_PASSWORD": "New-Admin-Pass-1"})
    backend.prepare(scenario, "PARTIAL_USERS")
    stop(start_until_supervisord(scenario))  # oned made tables and versions, then died
    oned_died_during_its_bootstrap(base_root, backend)
    assert scenario.run(dry_run=True).returncode == 0
    start_until_supervisord(scenario)
    dot_one = base_root / "var/lib/one/.one"
    assert not (dot_one / "onegate_auth").exists()
    assert (dot_one / "one_auth").read_text() == "oneadmin:New-Admin-Pass-1\n"
    assert (dot_one / "one_auth").stat().st_mode & 0o777 == 0o600


def test_fresh_install_generates_one_auth_without_logging_it(
        base_root: Path, start_until_supervisord: Callable[[Scenario], Running]) -> None:
    scenario = Scenario(base_root)
    running = start_until_supervisord(scenario)
    one_auth = base_root / "var/lib/one/.one/one_auth"
    user, _, password = one_auth.read_text().strip().partition(":")
    assert user == "oneadmin" and len(password) >= 32
    output = stop(running)
    assert str(one_auth) in output
    assert password not in output


def test_restart_of_a_bootstrapped_volume_converges(
        base_root: Path, backend: Backend,
        start_until_supervisord: Callable[[Scenario], Running]) -> None:
    scenario = Scenario(base_root, {"ONEADMIN_PASSWORD": FIXTURE_PASSWORD})
    backend.prepare(scenario, "BOOTSTRAPPED")
    put_dot_one(base_root, dot_one_source(backend), ("one_key", "one_auth", *SERVICE_AUTH))
    before = volume_snapshot(base_root)
    before_db = scenario.db_snapshot()
    for _ in range(2):
        stop(start_until_supervisord(scenario))
    after = volume_snapshot(base_root)
    # Everything that was there is unchanged (one_auth rewritten with the same content).
    assert {path: digest for path, digest in after.items() if path in before} == before
    assert scenario.db_snapshot() == before_db


def test_start_after_oned_died_inside_a_transaction(
        base_root: Path, start_until_supervisord: Callable[[Scenario], Running]) -> None:
    """sqlite is the default backend: a pod killed while oned wrote must start again, on the
    committed data, with the crashed files kept; the dry run says so and changes nothing."""
    scenario = Scenario(base_root, {"ONEADMIN_PASSWORD": FIXTURE_PASSWORD})
    SqliteBackend().prepare(scenario, "BOOTSTRAPPED")
    put_dot_one(base_root, dot_one_source(SqliteBackend()), ("one_key", "one_auth",
                                                              *SERVICE_AUTH))
    db = scenario.layout.sqlite_db
    committed = db.read_bytes()
    crash_inside_transaction(db)
    before = volume_snapshot(base_root)

    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "decision: proceed" in dry.stdout and "rolled back" in dry.stdout
    assert volume_snapshot(base_root) == before

    output = stop(start_until_supervisord(scenario))
    assert db.read_bytes() == committed
    assert not db.with_name("one.db-journal").exists()
    kept = list(scenario.layout.backups.glob("one.db-crash-*/one.db-journal"))
    assert len(kept) == 1 and str(kept[0].parent) in output


# --- the DB wait -------------------------------------------------------------------------


def test_db_never_up_exits_4_at_the_deadline(base_root: Path) -> None:
    scenario = Scenario(base_root, {
        "DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": "1", "DB_PASSWORD": "x-y-z",
        "ONERUN_DB_WAIT_TIMEOUT": "2"})
    dry = scenario.run(dry_run=True)
    real = scenario.run()
    assert real.returncode == dry.returncode == 4
    assert "DB" in real.stderr or "database" in real.stderr.lower()
    assert "x-y-z" not in real.stderr + dry.stderr + dry.stdout


def test_wrong_db_password_exits_2(base_root: Path, mariadb_server: Any) -> None:
    scenario = Scenario(base_root)
    MariaDBBackend(mariadb_server).prepare(scenario, "EMPTY")
    scenario.env["DB_PASSWORD"] = "Not-The-Db-Password"
    scenario.env["ONERUN_DB_WAIT_TIMEOUT"] = "20"
    dry = scenario.run(dry_run=True)
    real = scenario.run()
    assert real.returncode == dry.returncode == 2
    assert "DB_PASSWORD" in real.stderr
    assert "Not-The-Db-Password" not in real.stderr + dry.stderr + dry.stdout
    assert not (base_root / "var/lib/one").exists()


def test_db_down_then_up_proceeds(base_root: Path, mariadb_server: Any) -> None:
    scenario = Scenario(base_root)
    MariaDBBackend(mariadb_server).prepare(scenario, "EMPTY")
    mariadb_server.stop()
    try:
        begin = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "onerun", "start", "--dry-run", "--root", str(base_root)],
            env=scenario.full_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(5)
        assert process.poll() is None, "onerun gave up while the DB was down"
    finally:
        mariadb_server.start()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "decision: proceed" in out
    assert time.monotonic() - begin >= 5
    assert "waiting" in err.lower() or "refused" in err.lower()


def test_db_down_then_up_real_start_reaches_supervisord(
        base_root: Path, mariadb_server: Any,
        start_until_supervisord: Callable[[Scenario], Running]) -> None:
    scenario = Scenario(base_root)
    MariaDBBackend(mariadb_server).prepare(scenario, "EMPTY")
    mariadb_server.stop()
    threading.Timer(5, mariadb_server.start).start()
    try:
        begin = time.monotonic()
        running = start_until_supervisord(scenario)
        assert time.monotonic() - begin >= 5
    finally:
        mariadb_server.start()  # no-op once up; the timer may still be pending
    assert "refused" in stop(running).lower()


@pytest.mark.parametrize("version", ["7.0.0", "7.4.0"])
def test_dry_run_on_upstream_layouts_prints_a_readable_plan(
        make_root: Callable[..., Path], version: str) -> None:
    root = make_root(version, image_release=version, image_db_version=version)
    scenario = Scenario(root, {"ONEADMIN_PASSWORD": "Plan-Pass-1"})
    dry = scenario.run(dry_run=True)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("onerun start plan (root ")
    assert lines[-1] == "decision: proceed; exit code 0"
    for expected in ("ensure-dir", "write", str(root / "etc/one/oned.conf"),
                     str(root / "var/lib/one/.one/one_auth"), "supervisord.conf", "exec"):
        assert expected in dry.stdout, expected
    assert "Plan-Pass-1" not in dry.stdout + dry.stderr
    assert not (root / "var").exists() and not (root / "etc").exists()  # nothing written

    scenario.env["ONERUN_LOG_FORMAT"] = "json"
    plan = json.loads(scenario.run(dry_run=True).stdout)
    assert plan["exit_code"] == 0 and plan["refused"] is False
    actions = [step["action"] for step in plan["steps"]]
    assert actions[-1] == "exec" and "write" in actions


def test_sigterm_during_the_wait_exits_fast(base_root: Path) -> None:
    scenario = Scenario(base_root, {
        "DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": "1", "DB_PASSWORD": "x-y-z",
        "ONERUN_DB_WAIT_TIMEOUT": "300"})
    process = subprocess.Popen(
        [sys.executable, "-m", "onerun", "start", "--root", str(base_root)],
        env=scenario.full_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # inside the wait by now (imports take well under a second)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=10)
    assert time.monotonic() - sent < 2.0
    assert process.returncode == 143
    assert not (base_root / "var/lib/one").exists()


# --- the hostname oned resolves at start ---------------------------------------------------

UNRESOLVABLE = "onerun-test.invalid"  # RFC 6761: names under .invalid never resolve


def run_with_hostname(scenario: Scenario, hostname: str, *, dry_run: bool) -> Any:
    """`onerun start` in its own UTS namespace whose hostname is ``hostname``, as a container
    started with `--hostname` gets (the machine's own hostname is left alone)."""
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("unshare --uts is not permitted here (needs root or user namespaces)")
    argv = [sys.executable, "-m", "onerun", "start", "--root", str(scenario.root)]
    if dry_run:
        argv.append("--dry-run")
    return subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                           hostname, *argv], env=scenario.full_env(), capture_output=True,
                          text=True, timeout=60, check=False)


def test_unresolvable_system_hostname_is_refused_before_oned_fails(base_root: Path) -> None:
    """oned resolves the system hostname at start when oned.conf has no HOSTNAME
    (src/nebula/Nebula.cc@7.0/@7.4) and exits 255 when it cannot: refuse first, with the fix."""
    hosts = Path("/etc/hosts").read_bytes()
    scenario = Scenario(base_root)
    for dry_run in (True, False):
        result = run_with_hostname(scenario, UNRESOLVABLE, dry_run=dry_run)
        output = result.stdout + result.stderr
        assert result.returncode == 3, output
        assert UNRESOLVABLE in output
        assert "OPENNEBULA_HOSTNAME" in output and "hostAliases" in output
        assert "--add-host" in output
    assert "decision: refuse" in run_with_hostname(scenario, UNRESOLVABLE, dry_run=True).stdout
    assert not (base_root / "var/lib/one").exists() and not (base_root / "etc/one").exists()
    assert Path("/etc/hosts").read_bytes() == hosts  # never edited

    # With HOSTNAME in oned.conf, oned looks nothing up at start: the same container proceeds.
    scenario.env["OPENNEBULA_HOSTNAME"] = "one.example.org"
    proceeds = run_with_hostname(scenario, UNRESOLVABLE, dry_run=True)
    assert proceeds.returncode == 0, proceeds.stdout + proceeds.stderr
    assert "one.example.org" in proceeds.stdout
