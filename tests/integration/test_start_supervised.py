"""`onerun start` all the way into a running supervisord, with stand-in OpenNebula programs.

The stand-in oned (R/usr/bin/oned, a test program, never shipped) records its uid, argv
and environment, writes oned.log lines, and answers the XML-RPC calls the probes and
post-start make. These tests check what an operator would see: programs as oneadmin,
prefixed logs on stdout, the start record written once oned answers, secrets nowhere they
should not be, the schema upgrade on the way in, a failed upgrade never reaching oned,
maintenance mode, and running as uid 9869 instead of root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from testlib import (
    DB_FIXTURES,
    ONEDB_STAND_IN,
    grant_traverse,
    require_shared,
    restore_modes,
    stop_process_tree,
    write_image_versions,
)

from onerun.layout import Layout

ONED_STAND_IN = '''#!/usr/bin/python3
"""STAND-IN for OpenNebula's oned, used by onerun's tests only (never shipped).

Records uid/argv/environment, logs to oned.log like oned does, serves the XML-RPC calls
onerun makes (one.user.info, one.zone.raftstatus, one.user.passwd) on ONE_XMLRPC's port.
"""
import json, os, pathlib, signal, sys, time
from xmlrpc.server import SimpleXMLRPCServer

root = pathlib.Path(__file__).resolve().parents[2]
records = root.parent / "records"  # the test's records dir, beside the root
if (records / "oned-fails").exists():
    print("stand-in oned: failing on purpose", flush=True)
    sys.exit(255)
port = int(os.environ["ONE_XMLRPC"].rsplit(":", 1)[1].split("/")[0])
(records / "oned.json").write_text(json.dumps(
    {"uid": os.getuid(), "argv": sys.argv, "env": dict(os.environ), "started": time.time()}))
log = open(root / "var/log/one/oned.log", "a")
log.write("stand-in oned: bootstrap done, listening\\n")
log.flush()
server = SimpleXMLRPCServer(("127.0.0.1", port), logRequests=False, allow_none=True)
server.register_function(
    lambda s, i, d=False: [True, "<USER><ID>0</ID><NAME>oneadmin</NAME></USER>", 0],
    "one.user.info")
server.register_function(
    lambda s: [True, "<RAFT><SERVER_ID>-1</SERVER_ID><STATE>0</STATE></RAFT>", 0],
    "one.zone.raftstatus")
server.register_function(lambda s, i, p, d=False: [True, i, 0], "one.user.passwd")


def user_update(session, uid, template, merge):
    """Merge NAME="value" into the user's template in one.db, as oned would (sqlite only:
    with MariaDB the call is recorded and answered)."""
    import re, sqlite3
    name, value = re.fullmatch(r'(\\w+)="([^"]*)"', template.strip()).groups()
    (records / "user-update.jsonl").open("a").write(json.dumps([uid, template, merge]) + "\\n")
    if not (root / "var/lib/one/one.db").exists():
        return [True, uid, 0]
    db = sqlite3.connect(root / "var/lib/one/one.db")
    db.execute("UPDATE user_pool SET body = replace(body, '<TEMPLATE>', '<TEMPLATE>' || ?)"
               " WHERE oid = ?", (f"<{name}><![CDATA[{value}]]></{name}>", uid))
    db.commit()
    return [True, uid, 0]


server.register_function(user_update, "one.user.update")

def stop(signum, frame):
    (records / "oned.stopped").write_text(str(time.time()))
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
server.serve_forever()
'''

SERVICE_STAND_IN = '''#!/usr/bin/python3
"""STAND-IN for ruby/node running an OpenNebula service, for onerun's tests only.

Named after the service directory in its first argument; records uid and stop time.
"""
import json, os, pathlib, signal, sys, time

root = pathlib.Path(__file__).resolve().parents[2]
records = root.parent / "records"
name = pathlib.Path(sys.argv[1]).parent.name
(records / f"{name}.json").write_text(json.dumps({"uid": os.getuid(), "argv": sys.argv}))
print(f"stand-in {name} running", flush=True)

def stop(signum, frame):
    (records / f"{name}.stopped").write_text(str(time.time()))
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(1)
'''

CANARY_ADMIN = "Canary-Admin-7f3a9c"
CANARY_DB = "Canary-Db-51e2d0"
CANARY_KEY = "CanaryKey" + "k" * 40


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """A root with stand-ins, the environment of its start, and the running start."""

    root: Path
    records: Path
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "onerun", *args, "--root", str(self.root)]

    def dry_run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("start", "--dry-run"), env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)

    def start(self, as_uid: int | None = None) -> None:
        """Run `onerun start` as root, or as ``as_uid`` (its own group, no others)."""
        ids: dict[str, Any] = (
            {"user": as_uid, "group": as_uid, "extra_groups": []} if as_uid is not None else {})
        self.process = subprocess.Popen(
            self.command("start"), env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True, **ids)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.process is not None and self.process.poll() is not None:
                self.collect()
                pytest.fail(f"onerun start ended ({self.process.returncode}) before {what}:\n"
                            + "".join(self.output))
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}")

    def probe(self, kind: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("probe", kind, "--timeout", "5"), env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)

    def session_pids(self) -> list[int]:
        assert self.process is not None
        sid = os.getsid(self.process.pid)
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == sid:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def stop(self) -> float:
        """SIGTERM the container's main process (supervisord); seconds until it exited."""
        assert self.process is not None
        begin = time.monotonic()
        self.output.append(stop_process_tree(self.process, timeout=90) or "")
        return time.monotonic() - begin

    def collect(self, timeout: float = 90) -> None:
        assert self.process is not None
        out, _ = self.process.communicate(timeout=timeout)
        self.output.append(out or "")

    def text(self) -> str:
        return "".join(self.output)


@pytest.fixture
def stack(tmp_path: Path, oneadmin_user: Any, make_root: Callable[..., Path]) -> Iterator[Stack]:
    """An image-like root: upstream 7.0.0 configs, a 7.0.2 image, a stand-in oned."""
    root = make_root("7.0.0", image_release="7.0.2", image_db_version="7.0.0")
    records = root.parent / "records"
    records.mkdir()
    os.chown(records, oneadmin_user.pw_uid, oneadmin_user.pw_gid)
    oned = root / "usr/bin/oned"
    oned.parent.mkdir(parents=True, exist_ok=True)
    oned.write_text(ONED_STAND_IN)
    oned.chmod(0o755)
    changed = grant_traverse([root / "usr", records])
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8",
           "ONE_XMLRPC": f"http://127.0.0.1:{free_port()}/RPC2"}
    result = Stack(root, records, env)
    yield result
    if result.process is not None and result.process.poll() is None:
        stop_process_tree(result.process)
    restore_modes(changed)


def oned_record(stack: Stack) -> dict[str, Any]:
    return dict(json.loads((stack.records / "oned.json").read_text()))


def test_fresh_start_runs_oned_as_oneadmin_and_no_secret_leaks(
        stack: Stack, mariadb_server: Any) -> None:
    name = f"one_{uuid.uuid4().hex[:8]}"
    mariadb_server.create_database(name, "oneadmin", CANARY_DB)
    stack.env.update({
        "ONEADMIN_PASSWORD": CANARY_ADMIN, "ONE_KEY": CANARY_KEY, "DB_BACKEND": "mysql",
        "DB_HOST": "127.0.0.1", "DB_PORT": str(mariadb_server.port), "DB_USER": "oneadmin",
        "DB_PASSWORD": CANARY_DB, "DB_NAME": name})
    assert stack.dry_run().returncode == 0
    stack.start()
    stack.wait_for("the stand-in oned", (stack.records / "oned.json").exists)
    stack.wait_for("the start record", stack.layout.volume_marker.exists)

    record = oned_record(stack)
    assert record["uid"] == 9869
    assert record["argv"][1:] == ["-f"]
    assert record["env"]["ONE_AUTH"] == str(stack.layout.one_auth)
    assert stack.probe("readiness").returncode == 0
    assert stack.probe("liveness").returncode == 0
    marker = json.loads(stack.layout.volume_marker.read_text())
    assert (marker["opennebula_version"], marker["db_version"]) == ("7.0.2", "7.0.0")

    # No child's environment or argv holds a secret (/proc of every process of the pod).
    for pid in stack.session_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        for canary in (CANARY_ADMIN, CANARY_DB, CANARY_KEY):
            assert canary.encode() not in environ, (pid, cmdline)
            assert canary.encode() not in cmdline, pid
    # No world-readable file holds one.
    for path in stack.root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o004:
            data = path.read_bytes()
            for canary in (CANARY_ADMIN, CANARY_DB, CANARY_KEY):
                assert canary.encode() not in data, path
    # The files that must hold them are oneadmin's alone.
    for path in (stack.layout.one_auth, stack.layout.one_key, stack.layout.etc_one / "oned.conf"):
        status = path.stat()
        assert (status.st_uid, status.st_mode & 0o777) == (9869, 0o600), path

    elapsed = stack.stop()
    output = stack.text()
    assert "[oned] stand-in oned: bootstrap done, listening" in output
    for canary in (CANARY_ADMIN, CANARY_DB, CANARY_KEY):
        assert canary not in output
    assert (stack.records / "oned.stopped").exists()
    assert elapsed < 60  # the stop budget the chart's grace period is built on
    assert stack.process is not None and stack.process.returncode == 0


def _sqlite_bootstrapped(stack: Stack) -> Path:
    db = stack.root / "var/lib/one/one.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(require_shared(DB_FIXTURES / "sqlite-bootstrapped/one.db"), db)
    dot_one = stack.root / "var/lib/one/.one"
    shutil.copytree(DB_FIXTURES / "sqlite-bootstrapped/dot-one", dot_one)
    return db


def _dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())


def _versions(db: Path) -> tuple[str, str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        shared = conn.execute("SELECT version FROM db_versioning ORDER BY oid DESC").fetchone()
        local = conn.execute("SELECT version FROM local_db_versioning ORDER BY oid DESC")
        return shared[0], local.fetchone()[0]


def _onedb_stand_in(stack: Stack, mode: str) -> Path:
    onedb = stack.root / "usr/bin/onedb"
    onedb.write_text(ONEDB_STAND_IN)
    onedb.chmod(0o755)
    record = stack.records / "onedb-calls.jsonl"
    conf = onedb.with_name("onedb-standin.json")
    conf.write_text(json.dumps({
        "mode": mode, "target": "7.4.0", "record": str(record),
        "marker": str(stack.layout.restore_failed_marker), "backups": str(stack.layout.backups),
        "pymysql_path": str(Path(pymysql.__file__).resolve().parent.parent)}))
    conf.chmod(0o644)
    os.chown(stack.records, 9869, 9869)
    return record


def test_bootstrapped_volume_runs_every_service_as_oneadmin_and_stops_in_order(
        stack: Stack) -> None:
    _sqlite_bootstrapped(stack)
    services = {"hem": "onehem/onehem-server.rb", "oneflow": "oneflow/oneflow-server.rb",
                "onegate": "onegate/onegate-server.rb", "fireedge": "fireedge/dist/index.js"}
    for interpreter in ("ruby", "node"):
        path = stack.root / "usr/bin" / interpreter
        path.write_text(SERVICE_STAND_IN)
        path.chmod(0o755)
    for relative in services.values():
        script = stack.root / "usr/lib/one" / relative
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("# stand-in: the ruby/node stand-in only reads this path\n")
    stack.env["ONEADMIN_PASSWORD"] = "fixturepass"
    stack.start()
    dirs = {"hem": "onehem", "oneflow": "oneflow", "onegate": "onegate", "fireedge": "dist"}
    for name in services:
        stack.wait_for(f"the stand-in {name}", (stack.records / f"{dirs[name]}.json").exists)
    for name in ("oned", *dirs.values()):
        assert json.loads((stack.records / f"{name}.json").read_text())["uid"] == 9869, name
    elapsed = stack.stop()
    output = stack.text()
    for name in services:
        assert f"[{name}] stand-in {dirs[name]} running" in output
    oned_stopped = float((stack.records / "oned.stopped").read_text())
    for name in dirs.values():
        assert float((stack.records / f"{name}.stopped").read_text()) < oned_stopped, name
    assert elapsed < 60


def test_older_db_is_upgraded_then_oned_starts(stack: Stack) -> None:
    write_image_versions(stack.root, "7.4.0", "7.4.0")
    db = _sqlite_bootstrapped(stack)
    # The image carries 7.4 drivers; the volume still has the 7.0 ones.
    (stack.root / "usr/share/one/remotes-dist").mkdir(parents=True)
    (stack.root / "usr/share/one/remotes-dist/VERSION").write_text("7.4.0\n")
    (stack.root / "var/lib/one/remotes").mkdir(parents=True)
    (stack.root / "var/lib/one/remotes/VERSION").write_text("7.0.0\n")
    (stack.root / "var/lib/one/remotes/stale-driver").write_text("from 7.0\n")
    calls = _onedb_stand_in(stack, "succeed")
    stack.env["ONEADMIN_PASSWORD"] = "fixturepass"
    dry = stack.dry_run()
    assert dry.returncode == 0 and "upgrade-schema" in dry.stdout
    assert not calls.exists() and _versions(db) == ("7.0.0", "7.0.0")  # dry run ran nothing

    stack.start()
    stack.wait_for("the stand-in oned", (stack.records / "oned.json").exists)
    assert _versions(db) == ("7.4.0", "7.4.0")
    call = json.loads(calls.read_text().splitlines()[0])
    assert call["argv"][1:] == ["upgrade", "--no-backup", "-s", str(db)]
    assert call["uid"] == 9869
    backups = list(stack.layout.backups.iterdir())
    assert len(backups) == 1 and "db7.0.0-to7.4.0" in backups[0].name
    remotes = stack.root / "var/lib/one/remotes"
    assert (remotes / "VERSION").read_text() == "7.4.0\n"
    assert not (remotes / "stale-driver").exists()
    assert (remotes / "VERSION").stat().st_uid == 9869
    stack.wait_for("the start record", stack.layout.volume_marker.exists)
    marker = json.loads(stack.layout.volume_marker.read_text())
    assert (marker["opennebula_version"], marker["db_version"]) == ("7.4.0", "7.4.0")
    stack.stop()
    assert "fixturepass" not in stack.text()


def test_failed_upgrade_restores_the_db_and_never_starts_oned(stack: Stack) -> None:
    write_image_versions(stack.root, "7.4.0", "7.4.0")
    db = _sqlite_bootstrapped(stack)
    before = _dump(db)
    _onedb_stand_in(stack, "fail")
    stack.env["ONEADMIN_PASSWORD"] = "fixturepass"
    stack.start()
    assert stack.process is not None
    stack.collect(timeout=120)
    assert stack.process.returncode == 3
    output = stack.text()
    assert "upgrade" in output.lower() and "backup" in output.lower()
    assert "fixturepass" not in output  # onedb printed it; onerun masked it
    assert not (stack.records / "oned.json").exists()
    assert not stack.layout.supervisor_sock.exists()
    assert _versions(db) == ("7.0.0", "7.0.0")
    assert _dump(db) == before  # every table and row as before the upgrade
    assert len(list(stack.layout.backups.iterdir())) == 1  # the backup is kept


def test_newer_db_is_refused_naming_the_matching_image(stack: Stack) -> None:
    db = _sqlite_bootstrapped(stack)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE db_versioning SET version='7.4.0'")
        conn.execute("UPDATE local_db_versioning SET version='7.4.0'")
        conn.commit()
    stack.env["ONEADMIN_PASSWORD"] = "fixturepass"
    dry = stack.dry_run()
    real = subprocess.run(stack.command("start"), env=stack.env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert dry.returncode == real.returncode == 3
    assert "7.4.x" in real.stderr and "7.4.x" in dry.stdout


def test_a_failed_oned_ends_the_container_with_a_documented_code(stack: Stack) -> None:
    """Exit 70 (README's exit-code table), the last line naming oned; not 0, which
    `--restart on-failure` and Kubernetes would take for a completed container."""
    _sqlite_bootstrapped(stack)
    (stack.records / "oned-fails").touch()
    stack.env["ONEADMIN_PASSWORD"] = "fixturepass"
    stack.start()
    assert stack.process is not None
    stack.collect(timeout=120)
    lines = [line for line in stack.text().splitlines() if line.strip()]
    assert stack.process.returncode == 70, lines[-10:]
    assert "oned" in lines[-1] and "70" in lines[-1]
    assert "[oned] stand-in oned: failing on purpose" in lines


def test_maintenance_mode_starts_no_opennebula_service(stack: Stack) -> None:
    _sqlite_bootstrapped(stack)
    stack.env.update({"ONEADMIN_PASSWORD": "fixturepass", "ONERUN_MAINTENANCE": "1"})
    stack.start()
    stack.wait_for("supervisord", stack.layout.supervisor_sock.exists)
    assert stack.layout.maintenance_flag.exists()
    time.sleep(2)
    assert not (stack.records / "oned.json").exists()
    readiness = stack.probe("readiness")
    assert readiness.returncode == 1 and "maintenance" in readiness.stdout
    assert stack.probe("liveness").returncode == 0
    assert stack.probe("startup").returncode == 0
    stack.stop()
    assert not stack.layout.volume_marker.exists()  # no start was completed


def test_start_as_oneadmin_without_root(stack: Stack) -> None:
    """The chart's way: uid 9869 under fsGroup, no chown, no user switching."""
    for directory in ("var/lib/one", "var/log/one", "run", "var/lock", "etc"):
        path = stack.root / directory
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 9869, 9869)
    stack.env["ONEADMIN_PASSWORD"] = "Oneadmin-Pass-1"
    stack.start(as_uid=9869)
    stack.wait_for("the stand-in oned", (stack.records / "oned.json").exists)
    assert oned_record(stack)["uid"] == 9869
    config = stack.layout.supervisor_conf.read_text()
    assert "user=" not in config
    assert stack.layout.one_auth.read_text() == "oneadmin:Oneadmin-Pass-1\n"
    stack.stop()
    assert "[oned]" in stack.text()


def test_maintenance_comes_up_when_the_database_is_what_is_broken(stack: Stack) -> None:
    """Unreachable MariaDB: the operator must still get a running container to work in."""
    stack.env.update({"ONERUN_MAINTENANCE": "1", "DB_BACKEND": "mysql", "DB_HOST": "127.0.0.1",
                      "DB_PORT": "1", "DB_PASSWORD": "Canary-Maint-Db",
                      "ONERUN_DB_WAIT_TIMEOUT": "300"})
    begin = time.monotonic()
    stack.start()
    stack.wait_for("supervisord", stack.layout.supervisor_sock.exists, timeout=90)
    assert time.monotonic() - begin < 60  # maintenance waits 15 s, not ONERUN_DB_WAIT_TIMEOUT
    assert stack.probe("liveness").returncode == 0
    assert stack.probe("readiness").returncode == 1
    stack.stop()
    output = stack.text()
    assert "could not be read" in output and "Canary-Maint-Db" not in output
    assert not (stack.records / "oned.json").exists()


def test_the_key_fingerprint_outlives_the_volume(stack: Stack) -> None:
    """Once oned answers, onerun records a fingerprint of one_key in oneadmin's template
    (in the database, through the API). After the volume is lost, a ONE_KEY that does not
    match it is refused and the right one proceeds."""
    db = _sqlite_bootstrapped(stack)
    key = stack.layout.one_key.read_text().split()[0]
    stack.env["ONEADMIN_PASSWORD"] = "fixturepass"
    stack.start()

    def recorded() -> str | None:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            body = conn.execute("SELECT body FROM user_pool WHERE oid = 0").fetchone()[0]
        found = re.search(r"<ONERUN_ONE_KEY_FINGERPRINT><!\[CDATA\[(\w+)\]\]>", body)
        return found.group(1) if found else None

    stack.wait_for("the key's fingerprint in oneadmin's template", lambda: bool(recorded()))
    stack.stop()
    fingerprint = recorded()
    assert fingerprint == hashlib.sha256(b"onerun one_key fingerprint v1\0"
                                         + key.encode()).hexdigest()
    assert key not in stack.text()

    stack.layout.one_key.unlink()  # the volume is lost; the database is not
    stack.env["ONE_KEY"] = "0123456789abcdef" * 4
    wrong = stack.dry_run()
    assert wrong.returncode == 3 and "ONE_KEY" in wrong.stdout, wrong.stdout + wrong.stderr
    stack.env["ONE_KEY"] = key
    right = stack.dry_run()
    assert right.returncode == 0, right.stdout + right.stderr
