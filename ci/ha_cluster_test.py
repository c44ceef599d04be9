"""An HA zone on a real cluster: the chart with ``replicaCount: 3`` on sqlite, its leader
label and leader Service, replication, and a leader kill (build.yml, job chart; docs/ha.md).

Runs against the current kube context with kubectl and helm on the PATH:

    python3 ci/ha_cluster_test.py --image onerun/opennebula:test

The release goes into a namespace of its own. Each step prints what it measured; on a
failure the evidence (pods and their labels, the leader Service's endpoints, every pod's
``onezone show 0`` and the tail of its oned.log) is printed and the exit code is 1. The
release is kept after a failure for the workflow's "What the cluster saw" step.

Standard library only: it runs on the CI runner's own python3, before any install.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CHART = Path(__file__).resolve().parents[1] / "helm" / "opennebula"
RELEASE = "ha"
NAMESPACE = "ha-zone"
REPLICAS = 3
# The chart's names (tests/ci/test_ci_ha_cluster_test.py renders the chart to keep them in
# step): the StatefulSet and the leader Service are named after the release's fullname.
FULLNAME = f"{RELEASE}-opennebula"
LEADER_SERVICE = f"{FULLNAME}-leader"
CONTAINER = "opennebula"
ROLE_LABEL = "onerun.io/raft-role"  # onerun/ha/label.py, ROLE_LABEL
ONED_LOG = "/var/log/one/oned.log"

# --- bounds, each with why ------------------------------------------------------------------
# Formation of three empty members took 89-121 s on a 2-core machine; the chart's startup
# budget (10 s x 90) is what a member is allowed before the kubelet restarts it.
READY_BOUND = 900.0
# ha.electionTimeoutMs, the chart's default: a follower waits this long without heartbeats
# before it stands for election.
ELECTION_TIMEOUT = 2.0
# After the election: the kubelet's kill of the forced pod, oned's fork of the leader hook,
# the hook's one API patch (3 s timeout) and this script's polling.
LABEL_SLACK = 10.0
NEW_LEADER_BOUND = ELECTION_TIMEOUT + LABEL_SLACK
# Labels and every pod's view of the zone agreeing, once the pods are Ready: one round asks
# every pod's CLI (a Ruby start and a raftstatus call to each server, seconds per pod), and a
# pod that just turned Ready may still wait for its follower hook's label.
ROLES_BOUND = 60.0
# From the label to the leader Service's EndpointSlice: the endpoint controller takes a second
# or two; a pod whose readiness just passed may wait for one readiness period (10 s).
SERVICE_BOUND = 15.0
# Measured 2-3 s from the SIGKILL to the first write with real oned (docs/ha.md, Measured);
# a loaded runner gets ample slack, far below the minutes a wedged zone takes.
WRITE_BOUND = 60.0
# One write attempt: a follower forwards to a leader it knows; an attempt made before the new
# leader is known may hang, and the next one should go out well within WRITE_BOUND.
WRITE_ATTEMPT_TIMEOUT = 10.0
# A follower applies a committed write at the next heartbeat (ha.broadcastTimeoutMs, 250 ms);
# the slack covers kubectl exec and the CLI's start (a Ruby process) on a busy runner.
REPLICATION_BOUND = 30.0
# The StatefulSet recreates the killed pod; onerun restarts oned on its own DB (no
# formation), then oned's 15 s Raft warm-up and the catch-up. Below the startup budget.
RETURN_BOUND = 600.0
# No new term (no election) and no label change for this long after the failover: a zone
# that flaps elects every few election timeouts.
STABLE_FOR = 30.0
STABLE_SAMPLE = 5.0
POLL = 0.5
# One kubectl or CLI call: writes without quorum hang in oned with no timeout of their own.
COMMAND_TIMEOUT = 30.0
# helm install returns once the objects exist; the wait for the pods is READY_BOUND.
INSTALL_TIMEOUT = 300.0
LOG_TAIL = 60

# one.zone.raftstatus's STATE (src/raft/RaftManager.h in OpenNebula/one: SOLO, CANDIDATE,
# FOLLOWER, LEADER); the CLI adds "-" for a server whose endpoint did not answer.
RAFT_STATES = {"0": "solo", "1": "candidate", "2": "follower", "3": "leader"}

T = TypeVar("T")


class HaClusterError(AssertionError):
    """The zone did not do what this test expects; the message says what and where."""


@dataclass(frozen=True)
class Pod:
    """A StatefulSet pod as the API server sees it."""

    name: str
    uid: str
    ready: bool
    role: str | None  # the onerun.io/raft-role label, None when the pod has none


@dataclass(frozen=True)
class Server:
    """One server of the zone as ``onezone show 0 -x`` reports it (its endpoint asked)."""

    id: int
    name: str
    state: str  # solo, candidate, follower, leader, or error when it did not answer
    term: int | None


# --- parsing (pure) -------------------------------------------------------------------------


def split_image(reference: str) -> tuple[str, str]:
    """``repo[:port]/name:tag`` to (repository, tag), as the chart's image values want."""
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag or not repository:
        raise HaClusterError(f"--image {reference!r}: give repository:tag, e.g. "
                             "onerun/opennebula:test")
    return repository, tag


def chart_values(image: str) -> dict[str, str]:
    """The values installed (``--set key=value``): a zone of REPLICAS on sqlite, with the
    tested image, which was loaded onto the nodes and is never pulled."""
    repository, tag = split_image(image)
    return {"replicaCount": str(REPLICAS), "database.type": "sqlite",
            "image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never"}


def parse_pods(pod_list: str, names: Sequence[str]) -> dict[str, Pod]:
    """The pods called ``names`` in ``kubectl get pods -o json``; a terminating pod is not
    ready (the force-deleted leader may still be listed for a moment)."""
    pods = {}
    for item in json.loads(pod_list)["items"]:
        meta = item["metadata"]
        if meta["name"] not in names:
            continue
        conditions = item.get("status", {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        pods[meta["name"]] = Pod(meta["name"], meta["uid"],
                                 ready and "deletionTimestamp" not in meta,
                                 (meta.get("labels") or {}).get(ROLE_LABEL))
    return pods


def ready_endpoints(slice_list: str) -> set[str]:
    """The pods behind a Service, from ``kubectl get endpointslices -o json``: ready ones
    only (no condition means ready, as the EndpointSlice API defines it)."""
    return {endpoint["targetRef"]["name"]
            for item in json.loads(slice_list)["items"]
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready", True) is not False
            and endpoint.get("targetRef", {}).get("kind") == "Pod"}


def parse_zone(xml: str) -> list[Server]:
    """``onezone show 0 -x``: the zone with each server's Raft status, which the CLI asks
    each server's endpoint for (Zone#info_extended, src/oca/ruby/opennebula/zone.rb in
    OpenNebula/one). The XML is read, not the table: the table cuts server names to 15
    characters (src/cli/one_helper/onezone_helper.rb)."""
    root = ET.fromstring(xml)  # noqa: S314 (our own oned's answer)
    servers = []
    for server in root.iterfind("SERVER_POOL/SERVER"):
        term = server.findtext("TERM", "-")
        servers.append(Server(int(server.findtext("ID", "-1")), server.findtext("NAME", ""),
                              RAFT_STATES.get(server.findtext("STATE", "-"), "error"),
                              int(term) if term.lstrip("-").isdigit() else None))
    if not servers:
        raise HaClusterError("onezone show 0 lists no servers: the zone is not in HA mode")
    return servers


def role_problems(pods: Mapping[str, Pod], zone: Sequence[Server]) -> list[str]:
    """What is wrong with the roles: exactly one pod labelled leader, the others follower,
    and the zone's view (one leader, the rest followers, by pod name) agreeing with the
    labels. Empty when all is well."""
    problems = []
    leaders = sorted(name for name, pod in pods.items() if pod.role == "leader")
    if len(leaders) != 1:
        problems.append(f"{len(leaders)} pods labelled {ROLE_LABEL}=leader ({leaders}), "
                        "expected exactly 1")
    for name, pod in sorted(pods.items()):
        if pod.role not in ("leader", "follower"):
            problems.append(f"{name} is labelled {ROLE_LABEL}={pod.role}, expected leader "
                            "or follower")
    zone_leaders = [s.name for s in zone if s.state == "leader"]
    if len(zone_leaders) != 1:
        problems.append(f"the zone reports {len(zone_leaders)} leaders ({zone_leaders}), "
                        "expected exactly 1")
    states = {s.name: s.state for s in zone}
    for name, pod in sorted(pods.items()):
        if states.get(name) != pod.role:
            problems.append(f"{name}: labelled {pod.role}, the zone says "
                            f"{states.get(name, 'it is no server')}")
    strangers = sorted(set(states) - set(pods))
    if strangers:
        problems.append(f"the zone lists servers that are no pod of the release: {strangers}")
    return problems


def leader_of(pods: Mapping[str, Pod]) -> str | None:
    """The one pod labelled leader, or None when there is none or more than one."""
    leaders = [name for name, pod in pods.items() if pod.role == "leader"]
    return leaders[0] if len(leaders) == 1 else None


def zone_term(zone: Sequence[Server]) -> int | None:
    """The term every answering server agrees on, or None when they differ or none answers."""
    terms = {s.term for s in zone if s.state != "error"}
    return terms.pop() if len(terms) == 1 else None


# --- the cluster ----------------------------------------------------------------------------


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """A command's stdout; its failure, with its stderr, as an HaClusterError."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise HaClusterError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise HaClusterError(f"{' '.join(argv)}: exit {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def kubectl(*args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    return run(["kubectl", "--namespace", NAMESPACE, *args], timeout)


def in_pod(pod: str, *command: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """A command in the front-end container. The image runs as oneadmin (uid 9869), whose
    ~/.one/one_auth onerun writes, so the CLI needs no credentials on its command line."""
    return kubectl("exec", pod, "--container", CONTAINER, "--", *command, timeout=timeout)


def pod_names() -> list[str]:
    return [f"{FULLNAME}-{i}" for i in range(REPLICAS)]


def pods() -> dict[str, Pod]:
    return parse_pods(kubectl("get", "pods", "--output", "json"), pod_names())


def zone_seen_from(pod: str) -> list[Server]:
    return parse_zone(in_pod(pod, "onezone", "show", "0", "-x"))


def leader_endpoints() -> set[str]:
    return ready_endpoints(kubectl("get", "endpointslices", "--output", "json",
                                   "--selector", f"kubernetes.io/service-name={LEADER_SERVICE}"))


def wait_for(what: str, bound: float, probe: Callable[[], T | None]) -> tuple[T, float]:
    """Poll ``probe`` until it returns a value within ``bound`` seconds (a value that came
    later fails too); the value and the seconds it took. A probe's HaClusterError counts as
    "not yet" and is kept for the message."""
    start = time.monotonic()
    last = "nothing yet"
    while True:
        try:
            value = probe()
        except HaClusterError as exc:
            value, last = None, str(exc)
        elapsed = time.monotonic() - start
        if elapsed > bound:
            raise HaClusterError(f"{what}: not within {bound:.0f} s ({elapsed:.1f} s); "
                                 f"last seen: {last}")
        if value is not None:
            return value, elapsed
        time.sleep(POLL)


def install(image: str) -> None:
    settings = [arg for key, value in chart_values(image).items()
                for arg in ("--set", f"{key}={value}")]
    run(["helm", "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         *settings], INSTALL_TIMEOUT)


def all_ready() -> dict[str, Pod] | None:
    found = pods()
    return found if len(found) == REPLICAS and all(p.ready for p in found.values()) else None


def settled_roles(expected_leader: str | None = None) -> Callable[[], str | None]:
    """A probe: the leader's name once the labels and every pod's view of the zone agree
    (and the leader is ``expected_leader``, when given); otherwise raises what is wrong."""
    def probe() -> str | None:
        found = pods()
        problems = [f"{name} is not ready" for name, p in sorted(found.items()) if not p.ready]
        problems += [f"{name} does not exist" for name in pod_names() if name not in found]
        for name in sorted(found):
            problems += [f"seen from {name}: {p}" for p in role_problems(found,
                                                                          zone_seen_from(name))]
        leader = leader_of(found)
        if expected_leader is not None and leader != expected_leader:
            problems.append(f"the leader is {leader}, expected {expected_leader}")
        if problems:
            raise HaClusterError("; ".join(problems))
        return leader
    return probe


def check_leader_service(leader: str, bound: float) -> float:
    def probe() -> bool | None:
        found = leader_endpoints()
        if found != {leader}:
            raise HaClusterError(f"{LEADER_SERVICE} reaches {sorted(found)}, expected [{leader}]")
        return True
    return wait_for(f"{LEADER_SERVICE} reaches only {leader}", bound, probe)[1]


def create_user(pod: str, name: str, timeout: float = COMMAND_TIMEOUT) -> None:
    # A throwaway user of a throwaway zone: its password is no secret.
    in_pod(pod, "oneuser", "create", name, "ha-cluster-test-password", timeout=timeout)


def check_user_everywhere(name: str, where: Sequence[str]) -> None:
    """Each pod answers reads from its own DB: the user there means it was replicated."""
    for pod in where:
        wait_for(f"user {name} visible on {pod}", REPLICATION_BOUND,
                 functools.partial(in_pod, pod, "oneuser", "show", name))


def first_write(pod: str, started: float) -> tuple[str, float]:
    """Create a user through ``pod`` until one attempt succeeds (each with a new name: an
    attempt that timed out may still have been applied); its name and the seconds since
    ``started``."""
    attempts: list[str] = []

    def attempt() -> str | None:
        name = f"after-failover-{len(attempts)}"
        attempts.append(name)
        create_user(pod, name, WRITE_ATTEMPT_TIMEOUT)
        return name
    remaining = WRITE_BOUND - (time.monotonic() - started)
    name, _ = wait_for(f"a write through {pod} within {WRITE_BOUND:.0f} s of the kill",
                       remaining, attempt)
    return name, time.monotonic() - started


def new_leader(old: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        # Labels only: a survivor that was briefly a candidate may miss one readiness probe,
        # which the leader Service check then waits for.
        leader = leader_of({n: p for n, p in pods().items() if n != old})
        if leader is None:
            raise HaClusterError(f"no pod other than {old} is labelled leader yet")
        return leader
    return probe


def returned(name: str, old_uid: str) -> Callable[[], Pod | None]:
    def probe() -> Pod | None:
        pod = pods().get(name)
        if pod is None or pod.uid == old_uid or not pod.ready:
            raise HaClusterError(f"{name}: {pod}")
        return pod
    return probe


def check_stable(leader: str) -> int:
    """The zone's term and the labels do not change for STABLE_FOR seconds; the term."""
    seen: list[tuple[int | None, str | None]] = []
    end = time.monotonic() + STABLE_FOR
    while True:
        term = zone_term(zone_seen_from(leader))
        seen.append((term, leader_of(pods())))
        if term is None or set(seen) != {(term, leader)}:
            raise HaClusterError(f"the zone is not stable: (term, labelled leader) went "
                                 f"{seen} (a term of None: the servers disagree)")
        if time.monotonic() >= end:
            return term
        time.sleep(STABLE_SAMPLE)


# --- the test -------------------------------------------------------------------------------


def test(image: str) -> None:
    install(image)
    _, took = wait_for(f"{REPLICAS} pods Ready", READY_BOUND, all_ready)
    print(f"all {REPLICAS} pods Ready after {took:.0f} s", flush=True)

    # (a) one leader, labels and the zone agree; (b) the leader Service.
    leader, _ = wait_for("labels and the zone agree", ROLES_BOUND, settled_roles())
    followers = [name for name in pod_names() if name != leader]
    print(f"leader {leader}, followers {followers}: labels and every pod's onezone agree",
          flush=True)
    check_leader_service(leader, SERVICE_BOUND)
    print(f"{LEADER_SERVICE} reaches {leader} only", flush=True)

    # (c) a write through a follower reaches every member.
    create_user(followers[0], "through-a-follower")
    check_user_everywhere("through-a-follower", pod_names())
    print(f"a user created through {followers[0]} is on all {REPLICAS} pods", flush=True)

    # (d) leader kill.
    old_uid = pods()[leader].uid
    killed = time.monotonic()
    kubectl("delete", "pod", leader, "--grace-period=0", "--force", "--wait=false")
    elected, _ = wait_for(f"a new leader labelled within {NEW_LEADER_BOUND:.0f} s of the kill",
                          NEW_LEADER_BOUND - (time.monotonic() - killed), new_leader(leader))
    took = time.monotonic() - killed
    print(f"{leader} force-deleted: {elected} labelled leader after {took:.1f} s "
          f"(bound {NEW_LEADER_BOUND:.0f} s)", flush=True)
    took = check_leader_service(elected, SERVICE_BOUND)
    print(f"{LEADER_SERVICE} reaches {elected} only, {took:.1f} s later", flush=True)
    survivor = next(name for name in followers if name != elected)
    written, took = first_write(survivor, killed)
    print(f"first write through {survivor} {took:.1f} s after the kill (bound "
          f"{WRITE_BOUND:.0f} s)", flush=True)
    _, took = wait_for(f"{leader} back and Ready", RETURN_BOUND, returned(leader, old_uid))
    print(f"{leader} back and Ready {took:.0f} s later", flush=True)
    wait_for("labels and the zone agree after the failover", ROLES_BOUND,
             settled_roles(expected_leader=elected))
    print(f"{leader} is a follower, labelled follower", flush=True)
    check_user_everywhere(written, [leader])
    print(f"{leader} has {written}, written while it was down", flush=True)

    # (e) no flapping.
    term = check_stable(elected)
    print(f"term {term} and leader {elected} unchanged for {STABLE_FOR:.0f} s", flush=True)


def evidence() -> str:
    """What the cluster shows now, each part on its own so one failure hides nothing."""
    parts = []

    def add(title: str, produce: Callable[[], str]) -> None:
        try:
            text = produce()
        except HaClusterError as exc:
            text = str(exc)
        parts.append(f"--- {title}\n{text.rstrip()}")

    add("pods", lambda: kubectl("get", "pods", "--output", "wide", "--label-columns",
                                ROLE_LABEL))
    add(f"{LEADER_SERVICE} endpoints", lambda: kubectl(
        "get", "endpointslices", "--output", "wide",
        "--selector", f"kubernetes.io/service-name={LEADER_SERVICE}"))
    for pod in pod_names():
        add(f"{pod}: onezone show 0", functools.partial(in_pod, pod, "onezone", "show", "0"))
        add(f"{pod}: {ONED_LOG}", functools.partial(in_pod, pod, "tail", "-n", str(LOG_TAIL),
                                                    ONED_LOG))
    return "\n".join(parts)


def uninstall() -> None:
    run(["helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"], INSTALL_TIMEOUT)
    run(["kubectl", "delete", "namespace", NAMESPACE, "--wait=false"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", required=True,
                        help="the tested image, repository:tag, already on the nodes")
    args = parser.parse_args(argv)
    try:
        split_image(args.image)
    except HaClusterError as exc:
        parser.error(str(exc))
    try:
        test(args.image)
    except HaClusterError as exc:
        print(f"::error::HA zone on the cluster: {exc}", flush=True)
        print(evidence(), flush=True)
        return 1
    uninstall()
    print("HA zone on the cluster: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
