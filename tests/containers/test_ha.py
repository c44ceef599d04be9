"""HA: three front-ends of one Raft zone, formed by onerun with no manual step (docs/ha.md).

The three members share one pod (one loopback), so each gets its own ports through
ONERUN_CONFIG (oned, gRPC, the hook manager, monitord, OneFlow, OneGate) and its own zone
service port; each has its own volume and emptyDirs, as three pods of a StatefulSet would.
They start at the same moment with empty volumes, as `podManagementPolicy: Parallel` starts
them: nobody says who founds the zone or who joins.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tier
from conftest import TierImages

from onerun.runtime.pid1 import EXIT_CRITICAL  # oned failed: onerun's PID 1 ended the container

READY = 600.0  # three oned on a loaded 2-core machine, one after another
MEMBERS = 3
KUBELET_RESTARTS = 2  # per member and test: more is a defect, not load
ZONE_PORT = 2640
ELECTION_MS = 2000  # ONERUN_HA_ELECTION_TIMEOUT_MS, onerun's default
POD_NAME = "one-opennebula-{}"

_CALL = """
import json, os
from onerun.runtime.oneapi import OneClient, OneApiError
method, args = json.loads(os.environ["HA_CALL"])
client = OneClient(os.environ["HA_ENDPOINT"], os.environ["HA_SESSION"], 30)
try:
    print(json.dumps({"ok": True, "value": client.call(method, *args)}))
except OneApiError as exc:
    print(json.dumps({"ok": False, "error": str(exc)}))
"""

# oned's Raft log as a member's one.db holds it (read-only): what each member really stored,
# beside what its raftstatus claims. sqlcmd is zlib and base64 (src/sql/LogDB.cc).
_LOGDB = """
import base64, sqlite3, zlib
db = sqlite3.connect("file:/var/lib/one/one.db?mode=ro", uri=True, timeout=5)
for row in db.execute("SELECT log_index, term, applied, timestamp, fed_index, sqlcmd FROM logdb"
                      " ORDER BY log_index"):
    print(*row[:5], zlib.decompress(base64.b64decode(row[5])).decode()[:70])
"""


def oned_port(i: int) -> int:
    return 2633 + 10 * i


def zone_address(i: int) -> str:
    return f"127.0.0.1:{ZONE_PORT + 10 * i}"


def overrides(i: int) -> dict[str, Any]:
    """Member i's ports; every other member in the pod has its own."""
    step = 10 * i
    oneflow = 2474 + step
    return {
        "oned": {"PORT": oned_port(i), "GRPC_PORT": 2634 + step,
                 "HM_MAD": {"ARGUMENTS": f"-p {2101 + step} -l {2102 + step} -b 127.0.0.1"}},
        "monitord": {"NETWORK": {"PORT": 4124 + step}},
        "onehem": {":subscriber_endpoint": f"tcp://localhost:{2101 + step}",
                   ":replier_endpoint": f"tcp://localhost:{2102 + step}"},
        "oneflow": {":one_xmlrpc": f"http://localhost:{oned_port(i)}/RPC2",
                    ":subscriber_endpoint": f"tcp://localhost:{2101 + step}", ":port": oneflow},
        "onegate": {":one_xmlrpc": f"http://localhost:{oned_port(i)}/RPC2",
                    ":server": {":port": 5030 + step},
                    ":oneflow_server": f"http://localhost:{oneflow}"},
    }


def member(base: tier.Frontend, i: int) -> tier.Frontend:
    """Member i of the chart's StatefulSet ``base`` (one render: one set of Secrets), with
    the zone's settings."""
    chartlib = tier.load_chartlib()
    config_path = base.env["ONERUN_CONFIG"]
    files = dict(base.files)
    files[config_path] = chartlib.MountedFile(json.dumps(overrides(i)).encode(), 0o444, False)
    env = {
        **base.env,
        "POD_NAME": POD_NAME.format(i),
        "OPENNEBULA_HOSTNAME": "127.0.0.1",
        "OPENNEBULA_MONITOR_ADDRESS": "127.0.0.1",
        "ONE_XMLRPC": f"http://127.0.0.1:{oned_port(i)}/RPC2",
        "ONERUN_HA_MEMBERS": ",".join(zone_address(k) for k in range(MEMBERS)),
        "ONERUN_HA_ADDRESS": zone_address(i),
        "ONERUN_HA_WAIT_TIMEOUT": "300",
    }
    return dataclasses.replace(base, env=env, files=files)


def call(box: Any, front: tier.Frontend, port: int, method: str, *args: Any) -> Any:
    """oned's API at 127.0.0.1:``port`` (any member: the pod shares one loopback)."""
    result = box.exec_run(["/opt/onerun/bin/python", "-c", _CALL], environment={
        "HA_CALL": json.dumps([method, args]), "HA_SESSION": f"oneadmin:{front.password}",
        "HA_ENDPOINT": f"http://127.0.0.1:{port}/RPC2"})
    text = (result.output or b"").decode("utf-8", "replace").strip()
    answer = json.loads(text.splitlines()[-1])
    assert answer["ok"], f"{method} on port {port}: {answer['error']}"
    return answer["value"]


def raft(box: Any, front: tier.Frontend, port: int) -> dict[str, int]:
    xml = str(call(box, front, port, "one.zone.raftstatus"))
    return {key: int(value) for key, value in re.findall(r"<([A-Z_]+)>(-?\d+)</\1>", xml)}


def zone_servers(box: Any, front: tier.Frontend, port: int) -> dict[str, int]:
    """{server name: ID} of the zone, as the member at ``port`` lists it."""
    zone = ET.fromstring(str(call(box, front, port, "one.zone.info", 0)))  # noqa: S314
    return {server.findtext("NAME", ""): int(server.findtext("ID", ""))
            for server in zone.iterfind("SERVER_POOL/SERVER")}


@dataclass
class Zone:
    """Three members: their containers, settings, volumes and emptyDirs (kept for a restart
    in the same pod)."""

    boxes: list[Any]
    fronts: list[tier.Frontend]
    volumes: list[str]
    scratch: list[dict[str, str]]

    def restart(self, engine: tier.Engine, image: str, pod: tier.Pod, i: int) -> Any:
        """Member i's container again, on its volume and emptyDirs, as the kubelet restarts
        a container in its pod."""
        self.boxes[i] = engine.start(tier.frontend_container(
            engine, image, pod, self.fronts[i], self.volumes[i], scratch=self.scratch[i]))
        return self.boxes[i]


@contextmanager
def evidence_on_failure(engine: tier.Engine, zone: Zone, keep: Path) -> Iterator[None]:
    """On a failure, every member's oned.log (read from its /var/log/one emptyDir, so also
    a killed member's) goes to ``keep`` in full and its tail to the test's output, with the
    tail of each container's own output and, for a running member, its raftstatus and its
    Raft log: what a Raft failure is diagnosed from (docs/ha.md, Failover)."""
    try:
        yield
    except BaseException:
        for i, volume in enumerate(zone.scratch):
            try:
                text = engine.run_helper("cat /l/oned.log", {volume["/var/log/one"]: "/l"})
                (keep / f"member-{i}-oned.log").write_text(text)
                print(f"--- member {i}: oned.log, last 150 lines (all in {keep}) ---")
                print("\n".join(text.splitlines()[-150:]))
                box = zone.boxes[i]
                print(f"--- member {i}: container output, tail ---\n{tier.logs(box)[-2000:]}")
                box.reload()
                if box.status == "running":
                    print(f"--- member {i}: raftstatus {raft(box, zone.fronts[i], oned_port(i))}")
                    rows = box.exec_run(["/opt/onerun/bin/python", "-c", _LOGDB]).output
                    print(f"--- member {i}: logdb (index term applied timestamp fed_index sql)\n"
                          f"{(rows or b'').decode('utf-8', 'replace')}")
            except Exception as exc:  # the evidence must never hide the failure itself
                print(f"--- member {i}: no log ({exc}) ---")
        raise


def start_zone(engine: tier.Engine, images: TierImages, pod: tier.Pod) -> Zone:
    """Three members started at once on empty volumes (not waited for: ``wait_zone_ready``)."""
    base = tier.chart_frontend({"database": {"type": "sqlite"}})
    fronts = [member(base, i) for i in range(MEMBERS)]
    zone = Zone([None] * MEMBERS, fronts, [engine.volume() for _ in range(MEMBERS)],
                [tier.empty_dirs(engine, front) for front in fronts])
    for i in range(MEMBERS):
        zone.restart(engine, images.current, pod, i)
    return zone


def wait_zone_ready(zone: Zone, engine: tier.Engine, image: str, pod: tier.Pod) -> None:
    """Every member ready, restarting a member that ended with exit 70 as the kubelet does
    (the chart's restartPolicy: Always): on a loaded machine oned may exit during formation
    when one of its drivers misses its 10 s INIT timeout, and a restart must converge.
    Any other exit, or more restarts than ``KUBELET_RESTARTS``, fails the test."""
    deadline = time.monotonic() + READY
    restarts = [0] * MEMBERS
    pending = set(range(MEMBERS))
    while pending:
        for i in sorted(pending):
            box = zone.boxes[i]
            box.reload()
            if box.status == "exited":
                code = box.attrs["State"]["ExitCode"]
                assert code == EXIT_CRITICAL and restarts[i] < KUBELET_RESTARTS, (
                    f"member {i} exited {code} (restarted {restarts[i]} times):\n"
                    f"{tier.logs(box)[-4000:]}")
                restarts[i] += 1
                print(f"member {i} exited {code}: restarted as the kubelet would "
                      f"({restarts[i]}/{KUBELET_RESTARTS})\n{tier.logs(box)[-1500:]}")
                zone.restart(engine, image, pod, i)
            elif box.exec_run(["onerun", "probe", "readiness"]).exit_code == 0:
                pending.discard(i)
        assert time.monotonic() < deadline, f"members {sorted(pending)} not ready in {READY} s"
        time.sleep(1)


def wait_converged(box: Any, front: tier.Frontend, timeout: float) -> list[dict[str, int]]:
    """Every member's raftstatus once COMMIT and LOG_INDEX are the same on all three."""
    deadline = time.monotonic() + timeout
    while True:
        states = [raft(box, front, oned_port(i)) for i in range(MEMBERS)]
        same = {(s["COMMIT"], s["LOG_INDEX"]) for s in states}
        if len(same) == 1 or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_formation_from_nothing_to_a_three_server_zone(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, tmp_path: Path
) -> None:
    started = time.monotonic()
    zone = start_zone(engine, images, pod)
    with evidence_on_failure(engine, zone, tmp_path):
        check_formation_and_refusal(engine, images, pod, zone, started)


def check_formation_and_refusal(engine: tier.Engine, images: TierImages, pod: tier.Pod,
                                zone: Zone, started: float) -> None:
    """The formation test's body, inside the evidence capture."""
    wait_zone_ready(zone, engine, images.current, pod)
    boxes, fronts = zone.boxes, zone.fronts
    formed = time.monotonic() - started
    front = fronts[0]
    probe = boxes[0]

    # One leader and two followers, each at the server ID the zone gave it.
    servers = zone_servers(probe, front, oned_port(0))
    assert sorted(servers) == [POD_NAME.format(i) for i in range(MEMBERS)], servers
    states = [raft(probe, front, oned_port(i)) for i in range(MEMBERS)]
    assert sorted(s["STATE"] for s in states) == [2, 2, 3], states
    for i, state in enumerate(states):
        assert state["SERVER_ID"] == servers[POD_NAME.format(i)], (i, state, servers)

    # A user created through a follower is on all three, with identical COMMIT and LOG_INDEX.
    follower = next(i for i, s in enumerate(states) if s["STATE"] == 2)
    user_id = int(call(probe, front, oned_port(follower), "one.user.allocate",
                       "via_follower", "a-password", "core", []))
    converged = wait_converged(probe, front, 30)
    assert len({(s["COMMIT"], s["LOG_INDEX"]) for s in converged}) == 1, converged
    for i in range(MEMBERS):
        xml = str(call(probe, front, oned_port(i), "one.user.info", user_id, False))
        assert "<NAME>via_follower</NAME>" in xml, (i, xml[:300])

    # The copies carry the zone's secrets: the same service auth files on every member.
    auth = {tier.read_file(box, "/var/lib/one/.one/oneflow_auth") for box in boxes}
    assert len(auth) == 1
    print(f"zone formed in {formed:.1f} s; raft {converged}")

    # A member with another ONEADMIN_PASSWORD is refused before its oned starts, on an empty
    # volume (its peers refuse its signature) and on its own (the DB's oneadmin hash), and
    # the zone's term does not move.
    last = max(i for i, s in enumerate(states) if s["STATE"] == 2)  # a follower, not probe's
    assert last != 0
    boxes[last].kill(signal="SIGTERM")
    tier.wait_exit(boxes[last], tier.STOP_BUDGET + 30)
    term = raft(probe, front, oned_port(0))["TERM"]
    chartlib = tier.load_chartlib()
    secret = fronts[last].env["ONEADMIN_PASSWORD_FILE"]
    wrong = dataclasses.replace(fronts[last], files={
        **fronts[last].files, secret: chartlib.MountedFile(b"not-the-zones", 0o440, True)})
    for volume in (engine.volume(), zone.volumes[last]):
        box = engine.start(tier.frontend_container(engine, images.current, pod, wrong, volume))
        code, _ = tier.wait_exit(box, 120)
        assert code == 3, tier.logs(box)[-3000:]
        assert "ONEADMIN_PASSWORD" in tier.logs(box)
        assert "not-the-zones" not in tier.logs(box)
    assert raft(probe, front, oned_port(0))["TERM"] == term


# Runs inside a surviving member: from the moment the leader's port stops answering, how
# long until another member is leader, and until a write through it succeeds.
_FAILOVER = """
import json, os, time
from onerun.runtime.oneapi import OneClient, OneApiError
session = os.environ["HA_SESSION"]
leader, others = json.loads(os.environ["HA_PORTS"])
def client(port, timeout=0.5):
    return OneClient(f"http://127.0.0.1:{port}/RPC2", session, timeout)
deadline = time.monotonic() + 120
while True:
    try:
        client(leader).call("one.zone.raftstatus")
    except OneApiError:
        lost = time.monotonic()
        break
    assert time.monotonic() < deadline, "the leader never went away"
    time.sleep(0.02)
elected = new = None
while time.monotonic() < deadline and new is None:
    for port in others:
        try:
            if "<STATE>3</STATE>" in client(port).call("one.zone.raftstatus"):
                elected, new = time.monotonic(), port
        except OneApiError:
            pass
    time.sleep(0.05)
written = user = None
errors = []
while time.monotonic() < deadline and written is None:
    try:
        user = client(others[0], 10).call("one.user.allocate", f"during_failover_{len(errors)}",
                                          "pw", "core", [])
        written = time.monotonic()
    except OneApiError as exc:
        errors.append(str(exc))
        time.sleep(0.1)
print(json.dumps({"election": elected and elected - lost, "write": written and written - lost,
                  "leader": new, "user": user, "errors": errors[:3] + errors[-3:]}))
"""


# Stalls in most runs here: a new leader in about 2 s, then the surviving follower takes one
# replicated record per LOG_PURGE_TIMEOUT and every write times out; the cause inside oned is
# not found yet (docs/ha.md, Failover). Kept out of the default run until it is.
@pytest.mark.unstable
def test_failover_after_sigkill_of_the_leader_and_its_return_as_a_follower(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, tmp_path: Path
) -> None:
    zone = start_zone(engine, images, pod)
    with evidence_on_failure(engine, zone, tmp_path):
        wait_zone_ready(zone, engine, images.current, pod)
        front = zone.fronts[0]
        states = [raft(zone.boxes[0], front, oned_port(i)) for i in range(MEMBERS)]
        old = next(i for i, s in enumerate(states) if s["STATE"] == 3)
        survivors = [i for i in range(MEMBERS) if i != old]
        watcher = zone.boxes[survivors[0]]
        result: dict[str, Any] = {}

        def watch() -> None:
            run = watcher.exec_run(["/opt/onerun/bin/python", "-c", _FAILOVER], environment={
                "HA_SESSION": f"oneadmin:{front.password}",
                "HA_PORTS": json.dumps([oned_port(old), [oned_port(i) for i in survivors]])})
            result["output"] = (run.output or b"").decode("utf-8", "replace")

        thread = threading.Thread(target=watch)
        thread.start()
        time.sleep(3)  # the watcher is polling the leader
        zone.boxes[old].kill(signal="SIGKILL")
        thread.join(150)
        measured = json.loads(result["output"].strip().splitlines()[-1])
        budget = ELECTION_MS / 1000 + 2
        assert measured["election"] is not None and measured["election"] <= budget, measured
        assert measured["write"] is not None, result["output"]
        user_id = int(measured["user"])

        # The old leader's container comes back in its pod: a follower, with the missed write.
        back = zone.restart(engine, images.current, pod, old)
        tier.wait_ready(back, READY)
        converged = wait_converged(zone.boxes[survivors[0]], front, 60)
        assert raft(back, front, oned_port(old))["STATE"] == 2, converged
        assert len({(s["COMMIT"], s["LOG_INDEX"]) for s in converged}) == 1, converged
        xml = str(call(back, front, oned_port(old), "one.user.info", user_id, False))
        assert "<NAME>during_failover_" in xml
        print(f"failover: new leader {measured['election']:.2f} s, first write "
              f"{measured['write']:.2f} s after the leader's port went away; raft {converged}")
