"""An HA zone from the chart: replicaCount 3 (or 5, 7) on sqlite, what each pod is told, the
leader routing (label, RBAC, Services), and what the chart refuses. Each pod's environment
goes through onerun's own settings loader, as the kubelet would build it for that pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chartlib import (
    FULLNAME,
    KUBELET_ENV,
    NAMESPACE,
    container,
    env,
    frontend_runtime,
    render,
    render_error,
)
from test_chart_contract import load_runtime

from onerun.errors import SettingsError
from onerun.ha.label import ROLE_LABEL
from onerun.settings import HA_BROADCAST_TIMEOUT_MS, HA_ELECTION_TIMEOUT_MS

HA: dict[str, Any] = {"replicaCount": 3, "database": {"type": "sqlite"}}
HEADLESS = f"{FULLNAME}-headless"
DOMAIN = f"{HEADLESS}.{NAMESPACE}.svc.cluster.local"


def ha(**values: Any) -> dict[str, Any]:
    return {**HA, **values}


def pod_spec(values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = render(values).get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]
    return spec


def test_three_replicas_tell_every_pod_the_whole_zone() -> None:
    rendered = render(HA)
    sts = rendered.get("StatefulSet", FULLNAME)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == HEADLESS
    one = env(container(rendered))
    assert one["ONERUN_HA_MEMBERS"] == ",".join(
        f"{FULLNAME}-{i}.{DOMAIN}:2640" for i in range(3))
    assert one["ONERUN_HA_ADDRESS"] == f"$(POD_NAME).{DOMAIN}:2640"
    assert one["OPENNEBULA_HOSTNAME"] == f"$(POD_NAME).{DOMAIN}"
    assert one["ONERUN_HA_ELECTION_TIMEOUT_MS"] == str(HA_ELECTION_TIMEOUT_MS) == "2000"
    assert one["ONERUN_HA_BROADCAST_TIMEOUT_MS"] == str(HA_BROADCAST_TIMEOUT_MS) == "250"


def test_a_single_front_end_gets_no_zone() -> None:
    rendered = render({"database": {"type": "sqlite"}})
    assert not [name for name in env(container(rendered)) if name.startswith("ONERUN_HA_")]
    assert "zone" not in {p["name"] for p in container(rendered)["ports"]}
    assert not rendered.all("PodDisruptionBudget")


@pytest.mark.parametrize("ordinal", [0, 1, 2])
def test_onerun_accepts_each_pods_zone_settings(ordinal: int, tmp_path: Path) -> None:
    pod = f"{FULLNAME}-{ordinal}"
    runtime = frontend_runtime(render(HA), pod_name=pod)
    settings = load_runtime(runtime, tmp_path)
    assert settings.ha is not None and settings.db_backend == "sqlite"
    assert settings.ha.server_name == pod
    assert settings.ha.address == f"{pod}.{DOMAIN}:2640"
    assert len(settings.ha.members) == 3 and settings.ha.address in settings.ha.members
    assert settings.ha.endpoint == f"http://{pod}.{DOMAIN}:2633/RPC2"
    assert settings.hostname == f"{pod}.{DOMAIN}"
    assert (settings.ha.election_timeout_ms, settings.ha.broadcast_timeout_ms) == (2000, 250)


def test_the_timers_are_values(tmp_path: Path) -> None:
    rendered = render(ha(ha={"electionTimeoutMs": 1500, "broadcastTimeoutMs": 300}))
    settings = load_runtime(frontend_runtime(rendered), tmp_path)
    assert settings.ha is not None
    assert (settings.ha.election_timeout_ms, settings.ha.broadcast_timeout_ms) == (1500, 300)


def test_heartbeats_above_a_quarter_of_the_election_timeout_are_refused_like_onerun_does(
    tmp_path: Path,
) -> None:
    message = render_error(ha(ha={"electionTimeoutMs": 1000, "broadcastTimeoutMs": 300}))
    assert "ha.broadcastTimeoutMs (300)" in message and "ha.electionTimeoutMs (1000)" in message
    # onerun refuses the same environment: the chart moves the refusal to `helm install`.
    runtime = frontend_runtime(render(HA))
    runtime.env["ONERUN_HA_BROADCAST_TIMEOUT_MS"] = "300"
    runtime.env["ONERUN_HA_ELECTION_TIMEOUT_MS"] = "1000"
    with pytest.raises(SettingsError, match="ONERUN_HA_BROADCAST_TIMEOUT_MS"):
        load_runtime(runtime, tmp_path)


def test_the_zone_port_is_on_the_pod_and_the_headless_service() -> None:
    rendered = render(ha(ha={"zonePort": 2700}))
    ports = {p["name"]: p for p in container(rendered)["ports"]}
    assert ports["zone"] == {"name": "zone", "containerPort": 2700, "protocol": "TCP"}
    headless = rendered.get("Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    # Members find each other while none is ready yet (formation).
    assert headless["spec"]["publishNotReadyAddresses"] is True
    zone = next(p for p in headless["spec"]["ports"] if p["name"] == "zone")
    assert (zone["port"], zone["targetPort"]) == (2700, "zone")
    assert env(container(rendered))["ONERUN_HA_ADDRESS"].endswith(":2700")
    # The zone port stays off the main Service: only the members talk to it.
    main = rendered.get("Service", FULLNAME)
    assert "zone" not in {p["name"] for p in main["spec"]["ports"]}


def test_each_pod_has_its_own_volume_and_the_same_secrets() -> None:
    rendered = render(HA)
    sts = rendered.get("StatefulSet", FULLNAME)
    claims = sts["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    spec = sts["spec"]["template"]["spec"]
    assert "data" not in {v["name"] for v in spec["volumes"]}  # from the claim template
    # One Secret for every pod: the zone needs one oneadmin password and one one_key.
    secrets = [v["secret"] for v in spec["volumes"] if "secret" in v]
    assert [s["secretName"] for s in secrets] == [FULLNAME]
    assert {i["path"] for i in secrets[0]["items"]} == {"oneadmin-password", "one-key"}
    assert rendered.names("Secret") == {FULLNAME}


def test_pods_start_in_parallel_so_the_founder_can_see_its_peers() -> None:
    sts = render(HA).get("StatefulSet", FULLNAME)
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


@pytest.mark.parametrize(("replicas", "unavailable"), [(3, 1), (5, 2), (7, 3)])
def test_the_pdb_keeps_a_majority(replicas: int, unavailable: int) -> None:
    pdb = render(ha(replicaCount=replicas)).get("PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["maxUnavailable"] == unavailable
    assert replicas - unavailable > replicas // 2  # what stays is a majority
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"


def test_an_explicit_pdb_wins_in_a_zone() -> None:
    values = ha(podDisruptionBudget={"enabled": True, "maxUnavailable": 0})
    assert render(values).get("PodDisruptionBudget", FULLNAME)["spec"]["maxUnavailable"] == 0


def test_the_network_policy_lets_the_members_reach_each_other() -> None:
    policy = render(ha(networkPolicy={"enabled": True})).get("NetworkPolicy", FULLNAME)
    rules = [r for r in policy["spec"]["ingress"]
             if {p["port"] for p in r.get("ports", [])} == {"xmlrpc", "zone"}]
    assert len(rules) == 1
    assert rules[0]["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "opennebula", "app.kubernetes.io/instance": "one",
        "app.kubernetes.io/component": "frontend"}}}]
    single = render({"database": {"type": "sqlite"}, "networkPolicy": {"enabled": True}})
    assert "zone" not in str(single.get("NetworkPolicy", FULLNAME)["spec"])


@pytest.mark.parametrize("replicas", [2, 4, 6])
def test_an_even_count_is_refused(replicas: int) -> None:
    message = render_error(ha(replicaCount=replicas))
    assert f"replicaCount {replicas} is even" in message
    assert "Set replicaCount to 3, 5 or 7" in message


@pytest.mark.parametrize("replicas", [0, 1, 3, 5, 7])
def test_odd_counts_and_zero_render(replicas: int) -> None:
    sts = render(ha(replicaCount=replicas)).get("StatefulSet", FULLNAME)
    assert sts["spec"]["replicas"] == replicas


@pytest.mark.parametrize("database", [
    {"type": "mariadb"},
    {"type": "external", "external": {"host": "db.example.org", "password": "pw"}},
])
def test_a_zone_on_mariadb_is_refused_until_onerun_supports_it(database: dict[str, Any]) -> None:
    message = render_error({"replicaCount": 3, "database": database})
    assert f"needs database.type sqlite, not {database['type']}" in message
    assert "onerun refuses DB_BACKEND=mysql with ONERUN_HA_MEMBERS" in message
    assert "Set database.type=sqlite" in message


def test_onerun_itself_refuses_mysql_in_a_zone(tmp_path: Path) -> None:
    """The chart's refusal above mirrors this one; drop both together."""
    runtime = frontend_runtime(render(HA))
    runtime.env.update({"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": "pw"})
    with pytest.raises(SettingsError, match="sqlite only"):
        load_runtime(runtime, tmp_path)


def test_a_shared_claim_is_refused_in_a_zone() -> None:
    message = render_error(ha(persistence={"existingClaim": "one-data"}))
    assert "persistence.existingClaim" in message and "volume of its own" in message


def test_a_host_port_for_monitord_is_refused_in_a_zone() -> None:
    message = render_error(ha(monitord={"hostPort": True}))
    assert "monitord.hostPort" in message and "Set monitord.hostPort=false" in message


# --- leader routing: the Raft hooks label the leader pod, a Service selects it -----------

LEADER = f"{FULLNAME}-leader"
SELECTOR = {"app.kubernetes.io/name": "opennebula", "app.kubernetes.io/instance": "one",
            "app.kubernetes.io/component": "frontend"}


def test_the_role_allows_patching_the_zones_pods_and_nothing_else() -> None:
    rendered = render(HA)
    role = rendered.get("Role", f"{FULLNAME}-raft-role")
    assert role["rules"] == [{
        "apiGroups": [""], "resources": ["pods"], "verbs": ["patch"],
        "resourceNames": [f"{FULLNAME}-{i}" for i in range(3)]}]
    binding = rendered.get("RoleBinding", f"{FULLNAME}-raft-role")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": f"{FULLNAME}-raft-role"}
    spec = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": spec["serviceAccountName"]}]
    assert spec["serviceAccountName"] in rendered.names("ServiceAccount")
    # Only this pod template mounts the token; the ServiceAccount itself does not.
    assert spec["automountServiceAccountToken"] is True
    assert rendered.get("ServiceAccount", FULLNAME)["automountServiceAccountToken"] is False


def test_an_existing_service_account_is_the_one_bound() -> None:
    rendered = render(ha(serviceAccount={"create": False, "name": "ops"}))
    binding = rendered.get("RoleBinding", f"{FULLNAME}-raft-role")
    assert binding["subjects"][0]["name"] == "ops"


@pytest.mark.parametrize("ordinal", [0, 2])
def test_onerun_labels_its_own_pod_through_the_api(ordinal: int, tmp_path: Path) -> None:
    pod = f"{FULLNAME}-{ordinal}"
    runtime = frontend_runtime(render(HA), pod_name=pod)
    assert runtime.env["ONERUN_HA_LABEL_POD"] == "1"
    settings = load_runtime(runtime, tmp_path)
    assert settings.ha is not None and settings.ha.label_pod is not None
    host, port = KUBELET_ENV["KUBERNETES_SERVICE_HOST"], KUBELET_ENV["KUBERNETES_SERVICE_PORT"]
    assert settings.ha.label_pod.api == f"https://{host}:{port}"
    assert (settings.ha.label_pod.namespace, settings.ha.label_pod.pod) == (NAMESPACE, pod)


def test_the_leader_service_selects_the_pod_the_hooks_label_leader() -> None:
    rendered = render(HA)
    leader = rendered.get("Service", LEADER)
    assert leader["spec"]["selector"] == {**SELECTOR, ROLE_LABEL: "leader"}
    assert leader["spec"]["type"] == "ClusterIP"
    assert "publishNotReadyAddresses" not in leader["spec"]  # ready members only
    ports = {(p["name"], p["port"], p["protocol"]) for p in leader["spec"]["ports"]}
    assert ports == {("xmlrpc", 2633, "TCP"), ("grpc", 2634, "TCP"),
                     ("monitord-tcp", 4124, "TCP"), ("monitord-udp", 4124, "UDP")}
    container_ports = {p["name"] for p in container(rendered)["ports"]}
    assert {p["targetPort"] for p in leader["spec"]["ports"]} <= container_ports


def test_monitoring_goes_to_the_leader(tmp_path: Path) -> None:
    """Only the leader's monitord works: the hypervisors are told the leader Service's name
    and the monitord Service selects the leader too."""
    rendered = render(HA)
    monitord = rendered.get("Service", f"{FULLNAME}-monitord")
    assert monitord["spec"]["selector"] == {**SELECTOR, ROLE_LABEL: "leader"}
    settings = load_runtime(frontend_runtime(rendered), tmp_path)
    assert settings.monitor_address == f"{LEADER}.{NAMESPACE}.svc.cluster.local"
    # An address of the operator's still wins.
    address = env(container(render(ha(opennebula={"monitorAddress": "192.0.2.7"}))))
    assert address["OPENNEBULA_MONITOR_ADDRESS"] == "192.0.2.7"


@pytest.mark.parametrize("values", [
    {"database": {"type": "sqlite"}},
    ha(ha={"leaderRouting": {"enabled": False}}),
], ids=["single front-end", "routing off"])
def test_without_leader_routing_no_token_no_rbac_no_label(values: dict[str, Any]) -> None:
    rendered = render(values)
    assert not rendered.all("Role") and not rendered.all("RoleBinding")
    assert LEADER not in rendered.names("Service")
    spec = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    one = env(container(rendered))
    assert "ONERUN_HA_LABEL_POD" not in one and "POD_NAMESPACE" not in one
    monitord = rendered.get("Service", f"{FULLNAME}-monitord")
    assert monitord["spec"]["selector"] == SELECTOR
    assert one["OPENNEBULA_MONITOR_ADDRESS"] == f"$(POD_NAME).{DOMAIN}"


def test_the_notes_show_the_zone_and_its_leader() -> None:
    notes = render(HA).notes
    assert "HA zone of 3 front-ends" in notes
    assert f"Service {LEADER}" in notes and f"-L {ROLE_LABEL}" in notes
    assert "HA zone" not in render({"database": {"type": "sqlite"}}).notes
