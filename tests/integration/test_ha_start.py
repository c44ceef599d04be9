"""`onerun start` in an HA zone, end to end with the real command and real peers' zone
services (onerun.ha.wire responders in this process), on real sqlite files oned 7.0.0 wrote.

What the dry run shows for each formation step, that it changes nothing, and that joining
installs a copy of the zone's DB only into an empty member (JoinZone applied for real).
oned itself is not run here: the container tier (tests/containers/test_ha.py) forms a zone
of three real oned.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from testlib import DB_FIXTURES, require_shared

from onerun.database.classify import DbState
from onerun.database.sqlite import classify_sqlite
from onerun.errors import UnsafeStateError
from onerun.ha import wire
from onerun.ha.actions import JoinZone
from onerun.ha.formation import Phase, Report
from onerun.ha.zone import FOLLOWER, LEADER, RaftStatus, ZoneServer, local_servers
from onerun.layout import Layout
from onerun.plan import ApplyContext
from onerun.settings import load_settings

PASSWORD = "fixturepass"  # oneadmin's password in the fixture DB
NAMES = ("one-0", "one-1", "one-2")


def bootstrapped() -> Path:
    return require_shared(DB_FIXTURES / "sqlite-bootstrapped")


def one_key() -> str:
    return (bootstrapped() / "dot-one" / "one_key").read_text().split()[0]


def zone_db(target: Path, servers: tuple[ZoneServer, ...]) -> Path:
    """The fixture DB, its zone listing ``servers`` (as one.zone.addserver leaves it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bootstrapped() / "one.db", target)
    pool = "".join(f"<SERVER><ID>{s.id}</ID><NAME>{s.name}</NAME>"
                   f"<ENDPOINT><![CDATA[{s.endpoint}]]></ENDPOINT></SERVER>" for s in servers)
    with closing(sqlite3.connect(target)) as db:
        (body,) = db.execute("SELECT body FROM zone_pool WHERE oid = 0").fetchone()
        db.execute("UPDATE zone_pool SET body = ? WHERE oid = 0",
                   (body.replace("<SERVER_POOL></SERVER_POOL>",
                                 f"<SERVER_POOL>{pool}</SERVER_POOL>"),))
        db.commit()
    return target


def endpoint(name: str) -> str:
    return f"http://127.0.0.1:1/{name}"  # never called in these tests


@contextmanager
def peers(reports: dict[str, Report | None], password: str = PASSWORD,
          snapshot: Callable[[Path], None] | None = None) -> Iterator[dict[str, str]]:
    """A zone service for each named peer ({name: address}); None: a port nobody answers
    (127.0.0.1:N for the N-th such peer, N < 1024: nothing listens there here)."""
    responders = []
    addresses = {}
    try:
        for name, report in reports.items():
            if report is None:
                addresses[name] = f"127.0.0.1:{len(addresses) + 1}"
                continue
            state = wire.ServiceState(lambda: password, lambda r=report: r, snapshot)
            responder = wire.Responder(("127.0.0.1", 0), state, Path("/tmp"))
            responders.append(responder)
            addresses[name] = f"127.0.0.1:{responder.server.server_address[1]}"
        yield addresses
    finally:
        for responder in responders:
            responder.close()


def zone_env(me: str, addresses: dict[str, str], free_port: int) -> dict[str, str]:
    mine = f"127.0.0.1:{free_port}"
    return {"ONERUN_HA_MEMBERS": ",".join([*addresses.values(), mine]),
            "ONERUN_HA_ADDRESS": mine, "POD_NAME": me, "ONEADMIN_PASSWORD": PASSWORD,
            "ONE_KEY": one_key(), "ONERUN_HA_WAIT_TIMEOUT": "0"}


def dry_run(root: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, "-m", "onerun", "start", "--dry-run", "--root", str(root)],
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ONERUN_LOG_FORMAT": "json", **env},
        capture_output=True, text=True, timeout=60, check=False)
    plan = json.loads(result.stdout.splitlines()[-1]) if result.stdout.strip() else {}
    return result.returncode, plan, result.stderr


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def waiting(name: str) -> Report:
    return Report(name, Phase.WAITING, endpoint(name), True)


def leading(name: str, servers: tuple[ZoneServer, ...]) -> Report:
    return Report(name, Phase.MEMBER, endpoint(name), False, RaftStatus(0, LEADER, 1, 4, 4),
                  servers)


@pytest.fixture
def root(make_root: Callable[..., Path]) -> Path:
    return make_root("7.0.0", image_release="7.0.2", image_db_version="7.0.0")


def steps(plan: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in plan["steps"] if step["action"] == action]


def test_dry_run_of_the_founder_shows_the_bootstrap_and_registration(root: Path) -> None:
    before = tree(root)
    with peers({"one-1": waiting("one-1"), "one-2": waiting("one-2")}) as addresses:
        code, plan, stderr = dry_run(root, zone_env("one-0", addresses, 2790))
    assert code == 0, stderr
    [zone] = [s for s in steps(plan, "check") if s["name"] == "zone"][:1]
    assert zone["result"] == "ok" and "comes first" in zone["detail"]
    [found] = steps(plan, "found-zone")
    assert found["name"] == "one-0" and "one.zone.addserver" in found["steps"]
    assert any(s["path"].endswith("etc/one/oned.conf") for s in steps(plan, "write"))
    assert not steps(plan, "exec")  # oned starts in HA mode only after the next look
    assert tree(root) == before


def test_dry_run_of_a_joiner_shows_registration_and_copy(root: Path) -> None:
    servers = (ZoneServer(0, "one-0", endpoint("one-0")),)
    before = tree(root)
    with peers({"one-0": leading("one-0", servers), "one-1": waiting("one-1")}) as addresses:
        code, plan, stderr = dry_run(root, zone_env("one-1", addresses, 2791))
    assert code == 0, stderr
    [join] = steps(plan, "join-zone")
    assert "one.zone.addserver through" in join["steps"] and addresses["one-0"] in join["steps"]
    assert tree(root) == before


def test_dry_run_while_a_peer_does_not_answer_says_it_would_wait(root: Path) -> None:
    with peers({"one-1": waiting("one-1"), "one-2": None}) as addresses:
        code, plan, stderr = dry_run(root, zone_env("one-0", addresses, 2792))
    assert code == 0, stderr
    [note] = steps(plan, "check")
    assert note["detail"].startswith(f"would wait: no answer from {addresses['one-2']}")


def test_a_zone_with_another_password_refuses_with_exit_3(root: Path) -> None:
    before = tree(root)
    with peers({"one-0": waiting("one-0"), "one-2": waiting("one-2")},
               password="the-zone's-own") as addresses:
        env = zone_env("one-1", addresses, 2793)
        code, plan, _ = dry_run(root, env)
        real = subprocess.run(
            [sys.executable, "-m", "onerun", "start", "--root", str(root)],
            env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}, capture_output=True,
            text=True, timeout=60, check=False)
    assert code == 3 and plan["refused"]
    assert real.returncode == 3 and "ONEADMIN_PASSWORD is not the zone's" in real.stderr
    assert PASSWORD not in real.stderr + real.stdout
    assert tree(root) == before


def test_a_member_restarts_with_the_id_its_own_db_holds_with_every_peer_down(
        root: Path) -> None:
    servers = tuple(ZoneServer(i, name, endpoint(name)) for i, name in ((0, "one-0"),
                                                                        (3, "one-1")))
    zone_db(root / "var/lib/one/one.db", servers)
    dot_one = root / "var/lib/one/.one"
    shutil.copytree(bootstrapped() / "dot-one", dot_one)
    with peers({"one-0": None, "one-2": None}) as addresses:
        code, plan, stderr = dry_run(root, zone_env("one-1", addresses, 2794))
    assert code == 0, stderr
    zone = next(s for s in steps(plan, "check") if s["name"] == "zone")
    assert "as server 3" in zone["detail"]
    assert steps(plan, "exec")


# --- JoinZone applied: the copy goes only into an empty member ----------------------------

def join(root: Path, source: str, server_id: int) -> JoinZone:
    settings = load_settings({"ONERUN_HA_MEMBERS": f"{source},127.0.0.1:2795,127.0.0.1:2796",
                              "ONERUN_HA_ADDRESS": "127.0.0.1:2795", "POD_NAME": "one-1",
                              "ONEADMIN_PASSWORD": PASSWORD, "ONE_KEY": one_key()}, root=root)
    return JoinZone(settings, Layout(root), endpoint("one-0"), source, server_id,
                    sleep=lambda _s: None)


def context(root: Path, log: list[str]) -> ApplyContext:
    return ApplyContext(Layout(root), os.getuid(), os.getgid(), log.append)


@pytest.fixture
def leader_volume(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    servers = tuple(ZoneServer(i, n, endpoint(n)) for i, n in enumerate(NAMES[:2]))
    db = zone_db(tmp_path / "leader" / "one.db", servers)
    files = {"oneflow_auth": tmp_path / "leader" / "oneflow_auth"}
    files["oneflow_auth"].write_text("serveradmin:zone-secret\n")
    return db, files


def test_joining_installs_the_zone_copy_into_an_empty_member(
        root: Path, leader_volume: tuple[Path, dict[str, Path]]) -> None:
    db, files = leader_volume
    source_digest = hashlib.sha256(db.read_bytes()).hexdigest()
    (root / "var/lib/one/.onerun").mkdir(parents=True)
    (root / "var/lib/one/.one").mkdir()
    log: list[str] = []
    with peers({"one-0": leading("one-0", ())},
               snapshot=lambda t: wire.write_sqlite_snapshot(db, files, t)) as addresses:
        join(root, addresses["one-0"], 1).apply(context(root, log))
    installed = root / "var/lib/one/one.db"
    assert classify_sqlite(installed).state is DbState.BOOTSTRAPPED
    assert [s.name for s in local_servers(installed) or ()] == ["one-0", "one-1"]
    assert (root / "var/lib/one/.one/oneflow_auth").read_text() == "serveradmin:zone-secret\n"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == source_digest
    assert any("installed a copy" in line for line in log)
    assert not list((root / "var/lib/one/.onerun").iterdir())  # no snapshot left behind


def test_a_copy_that_does_not_list_this_member_is_not_installed(
        root: Path, tmp_path: Path) -> None:
    db = zone_db(tmp_path / "stale" / "one.db", (ZoneServer(0, "one-0", endpoint("one-0")),))
    (root / "var/lib/one/.onerun").mkdir(parents=True)
    log: list[str] = []
    with peers({"one-0": leading("one-0", ())},
               snapshot=lambda t: wire.write_sqlite_snapshot(db, {}, t)) as addresses, \
            pytest.raises(UnsafeStateError, match="does not list one-1"):
        join(root, addresses["one-0"], 1).apply(context(root, log))
    assert not (root / "var/lib/one/one.db").exists()


def test_joining_never_replaces_a_database_that_holds_data(
        root: Path, leader_volume: tuple[Path, dict[str, Path]]) -> None:
    db, files = leader_volume
    mine = root / "var/lib/one/one.db"
    shutil.copytree(bootstrapped(), root / "var/lib/one", dirs_exist_ok=True)
    (root / "var/lib/one/.onerun").mkdir()
    before = hashlib.sha256(mine.read_bytes()).hexdigest()
    with peers({"one-0": leading("one-0", ())},
               snapshot=lambda t: wire.write_sqlite_snapshot(db, files, t)) as addresses, \
            pytest.raises(UnsafeStateError, match="no longer empty"):
        join(root, addresses["one-0"], 1).apply(context(root, []))
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == before


def test_follower_state_is_reported(root: Path) -> None:
    """A follower's report keeps its state through the wire (the join rule counts it)."""
    report = Report("one-1", Phase.MEMBER, endpoint("one-1"), False,
                    RaftStatus(1, FOLLOWER, 1, 4, 4), ())
    with peers({"one-1": report}) as addresses:
        assert wire.ask(addresses["one-1"], PASSWORD).report == report


def test_maintenance_mode_does_not_form_the_zone(root: Path) -> None:
    """An operator's maintenance start (e.g. to restore a backup) must not found, join or
    wait for peers: no OpenNebula service runs in it."""
    before = tree(root)
    with peers({"one-1": None, "one-2": None}) as addresses:
        code, plan, stderr = dry_run(root, {**zone_env("one-0", addresses, 2797),
                                            "ONERUN_MAINTENANCE": "1"})
    assert code == 0, stderr
    assert not [s for s in steps(plan, "check") if s["name"] == "zone"]
    assert not steps(plan, "found-zone") and steps(plan, "exec")
    assert tree(root) == before


def test_a_zone_port_in_use_is_refused_naming_the_setting(root: Path) -> None:
    with socket.socket() as taken, peers({"one-1": waiting("one-1"),
                                          "one-2": waiting("one-2")}) as addresses:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = zone_env("one-0", addresses, taken.getsockname()[1])
        real = subprocess.run(
            [sys.executable, "-m", "onerun", "start", "--root", str(root)],
            env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8",
                 "ONERUN_LISTEN_ADDRESS": "127.0.0.1", **env},
            capture_output=True, text=True, timeout=60, check=False)
    assert real.returncode == 3, real.stderr
    assert "ONERUN_HA_ADDRESS" in real.stderr and "cannot listen" in real.stderr
