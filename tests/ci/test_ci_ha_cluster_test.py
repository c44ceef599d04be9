"""ci.ha_cluster_test offline: its parsing of what kubectl and the OpenNebula CLI print, its
decisions, its failure path, and the chart names it relies on (rendered, so the two cannot
drift). The cluster run itself is build.yml's chart job; it needs kind on GitHub.

The zone XML is ``onezone show 0 -x`` as the CLI builds it (Zone#info_extended in
src/oca/ruby/opennebula/zone.rb of OpenNebula/one): the zone body oned 7.0 stores (the
sqlite fixture's zone_pool row, with a server pool), and under each server the fields of its
``one.zone.raftstatus`` answer, or "-" when the server did not answer. The raftstatus
answers are verbatim those of three real oned 7.0 in one zone (a leader and two followers).
"""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from testlib import load_chartlib

from ci import ha_cluster_test as ha
from onerun.ha.label import ROLE_LABEL

LEADER, F1, F2 = (f"{ha.FULLNAME}-{i}" for i in range(3))

# one.zone.raftstatus of three real oned 7.0 (one leader at term 198, two followers).
RAFT = {
    0: "<RAFT><SERVER_ID>0</SERVER_ID><STATE>3</STATE><TERM>198</TERM><VOTEDFOR>0</VOTEDFOR>"
       "<COMMIT>209</COMMIT><LOG_INDEX>209</LOG_INDEX><LOG_TERM>198</LOG_TERM>"
       "<FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>",
    1: "<RAFT><SERVER_ID>1</SERVER_ID><STATE>2</STATE><TERM>198</TERM><VOTEDFOR>0</VOTEDFOR>"
       "<COMMIT>209</COMMIT><LOG_INDEX>209</LOG_INDEX><LOG_TERM>198</LOG_TERM>"
       "<FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>",
    2: "<RAFT><SERVER_ID>2</SERVER_ID><STATE>2</STATE><TERM>198</TERM><VOTEDFOR>0</VOTEDFOR>"
       "<COMMIT>209</COMMIT><LOG_INDEX>209</LOG_INDEX><LOG_TERM>198</LOG_TERM>"
       "<FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>",
}
FIELDS = ("STATE", "TERM", "VOTEDFOR", "COMMIT", "LOG_INDEX", "FEDLOG_INDEX")


def raft_field(raft: str, field: str) -> str:
    return ET.fromstring(raft).findtext(field, "-")  # noqa: S314 (a fixed test string)


def zone_xml(servers: dict[int, tuple[str, str | None]]) -> str:
    """``onezone show 0 -x`` for servers {id: (name, raftstatus or None if it did not
    answer)}: the zone's own STATE (0, enabled) sits beside the servers' ones."""
    body = []
    for sid, (name, raft) in sorted(servers.items()):
        extra = "".join(
            f"<{f}>{raft_field(raft, f) if raft else '-'}</{f}>" for f in FIELDS)
        body.append(f"<SERVER><ENDPOINT><![CDATA[http://{name}.{ha.FULLNAME}-headless."
                    f"{ha.NAMESPACE}.svc.cluster.local:2633/RPC2]]></ENDPOINT><ID>{sid}</ID>"
                    f"<NAME><![CDATA[{name}]]></NAME>{extra}</SERVER>")
    return ("<ZONE><ID>0</ID><NAME>OpenNebula</NAME><STATE>0</STATE><TEMPLATE><ENDPOINT>"
            "<![CDATA[http://localhost:2633/RPC2]]></ENDPOINT></TEMPLATE>"
            f"<SERVER_POOL>{''.join(body)}</SERVER_POOL></ZONE>")


HEALTHY = zone_xml({0: (LEADER, RAFT[0]), 1: (F1, RAFT[1]), 2: (F2, RAFT[2])})


def pod_json(name: str, role: str | None, ready: bool = True, uid: str = "",
             terminating: bool = False) -> dict[str, Any]:
    """One item of ``kubectl get pods -o json`` (the fields the script reads, and some it
    must ignore)."""
    labels = {"app.kubernetes.io/name": "opennebula", "apps.kubernetes.io/pod-index":
              name[-1], "statefulset.kubernetes.io/pod-name": name}
    if role is not None:
        labels[ROLE_LABEL] = role
    meta: dict[str, Any] = {"name": name, "namespace": ha.NAMESPACE, "uid": uid or f"uid-{name}",
                            "labels": labels}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-30T22:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {
        "phase": "Running", "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
            {"type": "PodScheduled", "status": "True"}]}}


def pod_list(*items: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


def three(leader: str | None = LEADER) -> dict[str, ha.Pod]:
    return ha.parse_pods(pod_list(*(pod_json(name, "leader" if name == leader else "follower")
                                    for name in (LEADER, F1, F2))), ha.pod_names())


# --- parsing ---------------------------------------------------------------------------------


def test_the_zone_as_the_cli_reports_it() -> None:
    assert ha.parse_zone(HEALTHY) == [ha.Server(0, LEADER, "leader", 198),
                                      ha.Server(1, F1, "follower", 198),
                                      ha.Server(2, F2, "follower", 198)]


def test_a_server_that_did_not_answer_is_in_error_with_no_term() -> None:
    xml = zone_xml({0: (LEADER, None), 1: (F1, RAFT[1]), 2: (F2, RAFT[2])})
    assert ha.parse_zone(xml)[0] == ha.Server(0, LEADER, "error", None)


def test_full_names_are_read_where_the_table_would_cut_them() -> None:
    # The table's NAME column is 15 characters wide: "one-opennebula-0" and "-1" would both
    # print as "one-opennebula-".
    names = [f"one-opennebula-{i}" for i in range(3)]
    xml = zone_xml({i: (name, RAFT[i]) for i, name in enumerate(names)})
    assert [s.name for s in ha.parse_zone(xml)] == names


def test_a_zone_with_no_servers_is_not_in_ha_mode() -> None:
    with pytest.raises(ha.HaClusterError, match="not in HA mode"):
        ha.parse_zone(zone_xml({}))


def test_pods_by_name_with_role_and_readiness() -> None:
    text = pod_list(pod_json(LEADER, "leader"), pod_json(F1, "follower", ready=False),
                    pod_json(F2, None), pod_json("ha-opennebula-test-abc12", None))
    assert ha.parse_pods(text, ha.pod_names()) == {
        LEADER: ha.Pod(LEADER, f"uid-{LEADER}", True, "leader"),
        F1: ha.Pod(F1, f"uid-{F1}", False, "follower"),
        F2: ha.Pod(F2, f"uid-{F2}", True, None)}


def test_a_terminating_pod_is_not_ready() -> None:
    text = pod_list(pod_json(LEADER, "leader", terminating=True))
    assert not ha.parse_pods(text, ha.pod_names())[LEADER].ready


def slice_json(*endpoints: tuple[str, bool | None]) -> str:
    """``kubectl get endpointslices -o json`` of the leader Service: (pod, ready) each, None
    for an endpoint with no ready condition."""
    items = []
    for name, ready in endpoints:
        conditions = {} if ready is None else {"ready": ready, "serving": ready,
                                               "terminating": False}
        items.append({"addresses": ["10.244.0.7"], "conditions": conditions,
                      "targetRef": {"kind": "Pod", "name": name, "namespace": ha.NAMESPACE}})
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"{ha.LEADER_SERVICE}-x7k2p", "labels": {
            "kubernetes.io/service-name": ha.LEADER_SERVICE}},
        "endpoints": items, "ports": [{"name": "xmlrpc", "port": 2633, "protocol": "TCP"}]}]})


def test_the_leader_service_reaches_ready_pods_only() -> None:
    assert ha.ready_endpoints(slice_json((LEADER, True), (F1, False))) == {LEADER}
    assert ha.ready_endpoints(slice_json((F2, None))) == {F2}
    assert ha.ready_endpoints(json.dumps({"items": [{"endpoints": None}]})) == set()


@pytest.mark.parametrize(("reference", "expected"), [
    ("onerun/opennebula:test", ("onerun/opennebula", "test")),
    ("registry.local:5000/onerun/opennebula:7.0.1-abc", ("registry.local:5000/onerun/opennebula",
                                                         "7.0.1-abc")),
])
def test_image_reference_to_the_chart_values(reference: str, expected: tuple[str, str]) -> None:
    assert ha.split_image(reference) == expected


@pytest.mark.parametrize("reference", ["onerun/opennebula", "registry.local:5000/one", ":x"])
def test_an_image_without_a_tag_is_refused(reference: str) -> None:
    with pytest.raises(ha.HaClusterError, match="repository:tag"):
        ha.split_image(reference)


# --- decisions -------------------------------------------------------------------------------


def test_one_leader_and_labels_that_agree_with_the_zone() -> None:
    assert ha.role_problems(three(), ha.parse_zone(HEALTHY)) == []
    assert ha.leader_of(three()) == LEADER


def test_two_pods_labelled_leader() -> None:
    pods = {**three(), F1: ha.Pod(F1, "u", True, "leader")}
    problems = ha.role_problems(pods, ha.parse_zone(HEALTHY))
    assert problems[0] == (f"2 pods labelled {ROLE_LABEL}=leader ({[LEADER, F1]}), "
                           "expected exactly 1")
    assert f"{F1}: labelled leader, the zone says follower" in problems
    assert ha.leader_of(pods) is None


def test_a_label_that_disagrees_with_the_zone() -> None:
    # The hooks labelled F1, but the zone elected the first pod: the Service would be wrong.
    problems = ha.role_problems(three(leader=F1), ha.parse_zone(HEALTHY))
    assert problems == [f"{LEADER}: labelled follower, the zone says leader",
                        f"{F1}: labelled leader, the zone says follower"]


def test_an_unlabelled_pod() -> None:
    pods = {**three(), F2: ha.Pod(F2, "u", True, None)}
    assert ha.role_problems(pods, ha.parse_zone(HEALTHY)) == [
        f"{F2} is labelled {ROLE_LABEL}=None, expected leader or follower",
        f"{F2}: labelled None, the zone says follower"]


def test_a_zone_with_no_leader_and_a_stranger() -> None:
    candidate = RAFT[0].replace("<STATE>3</STATE>", "<STATE>1</STATE>")
    xml = zone_xml({0: (LEADER, candidate), 1: (F1, RAFT[1]), 2: (F2, RAFT[2]),
                    3: ("old-member", None)})
    assert ha.role_problems(three(), ha.parse_zone(xml)) == [
        "the zone reports 0 leaders ([]), expected exactly 1",
        f"{LEADER}: labelled leader, the zone says candidate",
        "the zone lists servers that are no pod of the release: ['old-member']"]


def test_a_pod_the_zone_does_not_list() -> None:
    xml = zone_xml({0: (LEADER, RAFT[0]), 1: (F1, RAFT[1])})
    assert ha.role_problems(three(), ha.parse_zone(xml)) == [
        f"{F2}: labelled follower, the zone says it is no server"]


def test_the_term_the_answering_servers_agree_on() -> None:
    assert ha.zone_term(ha.parse_zone(HEALTHY)) == 198
    down = zone_xml({0: (LEADER, None), 1: (F1, RAFT[1]), 2: (F2, RAFT[2])})
    assert ha.zone_term(ha.parse_zone(down)) == 198
    newer = RAFT[2].replace("<TERM>198</TERM>", "<TERM>199</TERM>")
    split = zone_xml({0: (LEADER, RAFT[0]), 1: (F1, RAFT[1]), 2: (F2, newer)})
    assert ha.zone_term(ha.parse_zone(split)) is None


class Clock:
    """Stands in for time.monotonic and time.sleep: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_for_returns_the_first_value_and_how_long_it_took(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(ha, "time", clock)
    answers: list[str | None] = [None, None, "elected"]
    assert ha.wait_for("a leader", 5, lambda: answers.pop(0)) == ("elected", 2 * ha.POLL)


def test_wait_for_gives_up_at_its_bound_with_what_it_last_saw(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(ha, "time", clock)

    def probe() -> str | None:
        raise ha.HaClusterError("no pod other than x is labelled leader yet")
    with pytest.raises(ha.HaClusterError) as caught:
        ha.wait_for("a new leader labelled", 12, probe)
    assert str(caught.value).startswith("a new leader labelled: not within 12 s (12.5 s); "
                                        "last seen: no pod other than x is labelled leader yet")


def test_a_value_that_came_after_the_bound_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(ha, "time", clock)

    def slow() -> str:
        clock.now += 20  # one kubectl exec that hung
        return "written"
    with pytest.raises(ha.HaClusterError, match="not within 12 s"):
        ha.wait_for("a write", 12, slow)


# --- the failure path, with stand-ins for kubectl and helm -----------------------------------


def stand_in(directory: Path, name: str, message: str) -> None:
    """A stand-in command that fails as the real one does with no cluster."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_failure_prints_the_evidence_and_exits_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in(tmp_path, "helm", "Error: INSTALLATION FAILED: Kubernetes cluster unreachable")
    stand_in(tmp_path, "kubectl", "The connection to the server localhost:8080 was refused")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    assert ha.main(["--image", "onerun/opennebula:test"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("::error::HA zone on the cluster: helm install ha ")
    assert "--set replicaCount=3 --set database.type=sqlite" in out
    assert "exit 1: Error: INSTALLATION FAILED: Kubernetes cluster unreachable" in out
    for part in ("pods", f"{ha.LEADER_SERVICE} endpoints", f"{F2}: onezone show 0",
                 f"{F2}: /var/log/one/oned.log"):
        assert f"--- {part}\nkubectl " in out
    assert "was refused" in out


def test_an_image_without_a_tag_is_refused_before_anything_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        ha.main(["--image", "onerun/opennebula"])
    assert caught.value.code == 2
    assert "give repository:tag" in capsys.readouterr().err


# --- the chart names the script relies on ---------------------------------------------------


def nested(values: dict[str, str]) -> dict[str, Any]:
    """``--set key.sub=value`` as Helm reads it (numbers as numbers)."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = int(value) if value.isdigit() else value
    return tree


def test_the_chart_renders_what_the_script_relies_on() -> None:
    chartlib = load_chartlib()
    rendered = chartlib.render(nested(ha.chart_values("onerun/opennebula:test")),
                               name=ha.RELEASE)
    sts = rendered.get("StatefulSet", ha.FULLNAME)
    assert sts["spec"]["replicas"] == ha.REPLICAS
    assert [f"{sts['metadata']['name']}-{i}" for i in range(ha.REPLICAS)] == ha.pod_names()
    one = chartlib.container(rendered, ha.FULLNAME, ha.CONTAINER)
    assert one["image"] == "onerun/opennebula:test"
    assert one["imagePullPolicy"] == "Never"
    env = chartlib.env(one)
    assert env["DB_BACKEND"] == "sqlite"
    assert env["ONERUN_HA_LABEL_POD"] == "1"
    assert int(env["ONERUN_HA_ELECTION_TIMEOUT_MS"]) == ha.ELECTION_TIMEOUT * 1000
    assert "/var/log/one" in {m["mountPath"] for m in one["volumeMounts"]}
    assert ha.ONED_LOG.startswith("/var/log/one/")
    startup = one["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == ha.READY_BOUND
    leader = rendered.get("Service", ha.LEADER_SERVICE)
    assert leader["spec"]["selector"][ha.ROLE_LABEL] == "leader"
    assert ha.ROLE_LABEL == ROLE_LABEL  # what the hooks set (onerun/ha/label.py)
