"""Services, Ingress, HTTPRoute and NetworkPolicy; plus repository-wide checks on helm/."""

from __future__ import annotations

import re
from typing import Any

from chartlib import CHART_DIR, FULLNAME, chart, container, render, render_error

from onerun.catalogue import SERVICE_NAMES, SERVICES


def ports(service: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["port"], p["protocol"]) for p in service["spec"]["ports"]}


DOCKERFILE = CHART_DIR.parents[1] / "docker" / "Dockerfile"


def test_main_service_exposes_the_ports_of_the_services_the_image_installs() -> None:
    service = render().get("Service", FULLNAME)
    assert ports(service) == {
        "fireedge": (2616, "TCP"),
        "xmlrpc": (2633, "TCP"),
        "grpc": (2634, "TCP"),
        "oneflow": (2474, "TCP"),
        "onegate": (5030, "TCP"),
        "oneform": (13013, "TCP"),
    }
    subset = render({"opennebula": {"services": ["oned", "fireedge", "oneflow"]}})
    assert not {"oneform", "oneks"} & ports(subset.get("Service", FULLNAME)).keys()
    assert "oneform" in ports(
        render({"opennebula": {"services": ["oned", "oneform"]}}).get("Service", FULLNAME)
    )


def test_the_pod_opens_each_service_s_port_from_the_catalogue() -> None:
    """A container port named after a service (oned's: xmlrpc) is the port onerun's catalogue
    gives it; guacd listens on loopback only and gets none."""
    everything = render({"opennebula": {"services": list(SERVICE_NAMES)}})
    opened = {p["name"]: p["containerPort"] for p in container(everything)["ports"]}
    catalogued = {"xmlrpc" if spec.name == "oned" else spec.name: spec.port
                  for spec in SERVICES if spec.port is not None}
    assert {name: opened.get(name) for name in catalogued} == {**catalogued, "guacd": None}


def test_oneks_is_exposed_only_when_asked_for() -> None:
    """OneKS ships in its own package, opennebula-ks (OpenNebula's OneKS docs: `apt install
    opennebula-ks`), which the image does not install: its port is closed unless an image
    built with it lists oneks in opennebula.services."""
    assert "opennebula-ks" not in DOCKERFILE.read_text()
    default = render({"networkPolicy": {"enabled": True}})
    assert "oneks" not in ports(default.get("Service", FULLNAME))
    containers = default.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]["containers"]
    assert "oneks" not in {p["name"] for p in containers[0]["ports"]}
    api_rule = default.get("NetworkPolicy", FULLNAME)["spec"]["ingress"][0]
    policy_ports = {p["port"] for p in api_rule["ports"]}
    assert "oneks" not in policy_ports and "fireedge" in policy_ports
    asked = render({"opennebula": {"services": ["oned", "oneks"]}})
    assert ports(asked.get("Service", FULLNAME))["oneks"] == (10780, "TCP")


def test_headless_service_governs_the_statefulset() -> None:
    rendered = render()
    headless = rendered.get("Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert rendered.get("StatefulSet", FULLNAME)["spec"]["serviceName"] == f"{FULLNAME}-headless"


def test_monitord_has_its_own_service_type_with_tcp_and_udp() -> None:
    default = render().get("Service", f"{FULLNAME}-monitord")
    assert default["spec"]["type"] == "ClusterIP"
    assert ports(default) == {"monitord-tcp": (4124, "TCP"), "monitord-udp": (4124, "UDP")}
    lb = render(
        {
            "monitord": {
                "service": {
                    "type": "LoadBalancer",
                    "loadBalancerIP": "192.0.2.7",
                    "externalTrafficPolicy": "Local",
                }
            }
        }
    )
    assert lb.get("Service", FULLNAME)["spec"]["type"] == "ClusterIP"
    spec = lb.get("Service", f"{FULLNAME}-monitord")["spec"]
    assert (spec["type"], spec["loadBalancerIP"], spec["externalTrafficPolicy"]) == (
        "LoadBalancer",
        "192.0.2.7",
        "Local",
    )
    assert "/monitord/service/type" in render_error({"monitord": {"service": {"type": "Foo"}}})


def test_ingress_is_off_by_default_and_routes_to_fireedge() -> None:
    assert not render().all("Ingress")
    rendered = render(
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": [
                    {"host": "one.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}
                ],
            }
        }
    )
    ingress = rendered.get("Ingress", FULLNAME)
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "one.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "fireedge"}}
    assert "http://one.example.com/fireedge/sunstone" in rendered.notes
    # No rewriting proxy: FireEdge resolves __HOST__ in the browser
    # (HOST_RESOLVE_FLAG in src/fireedge/src/client/bootstrap.js, OpenNebula/one).
    assert not [d for d in rendered.docs if "nginx" in str(d.get("spec", {}).get("template", ""))]


def test_httproute_routes_to_fireedge_and_needs_a_gateway() -> None:
    assert not render().all("HTTPRoute")
    route = render(
        {
            "httpRoute": {
                "enabled": True,
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["one.example.com"],
            }
        }
    ).get("HTTPRoute", FULLNAME)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": FULLNAME, "port": 2616}]
    assert "httpRoute.parentRefs" in render_error({"httpRoute": {"enabled": True}})


def test_network_policy_is_opt_in_and_keeps_mariadb_private() -> None:
    assert not render().all("NetworkPolicy")
    rendered = render({"networkPolicy": {"enabled": True}})
    front = rendered.get("NetworkPolicy", FULLNAME)["spec"]
    api, monitord = front["ingress"]
    assert "from" not in api  # empty apiFrom: reachable from anywhere
    assert {p["port"] for p in monitord["ports"]} == {"monitord-tcp", "monitord-udp"}
    db = rendered.get("NetworkPolicy", f"{FULLNAME}-mariadb")["spec"]
    peer = db["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert peer["app.kubernetes.io/component"] == "frontend"
    sqlite = render({"networkPolicy": {"enabled": True}, "database": {"type": "sqlite"}})
    assert sqlite.names("NetworkPolicy") == {FULLNAME}


def test_network_policy_with_api_from_still_admits_the_helm_test_pod() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"team": "cloud-ops"}}}]
    rendered = render({"networkPolicy": {"enabled": True, "apiFrom": peers}})
    api, test_rule, monitord = rendered.get("NetworkPolicy", FULLNAME)["spec"]["ingress"]
    assert api["from"] == peers
    test_pod = next(iter(rendered.all("Pod")))["metadata"]["labels"]
    selector = test_rule["from"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= test_pod.items()  # it selects the rendered test Pod
    assert test_rule["ports"] == [{"port": "xmlrpc", "protocol": "TCP"}]
    assert {p["port"] for p in monitord["ports"]} == {"monitord-tcp", "monitord-udp"}


def test_nothing_in_the_chart_mentions_bitnami() -> None:
    files = [p for p in CHART_DIR.parent.rglob("*") if p.is_file()]
    assert files
    offenders = [p for p in files if "bitnami" in p.read_text(errors="replace").lower()]
    assert offenders == []


def test_readme_values_table_lists_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))

    def leaves(node: Any, prefix: str = "") -> set[str]:
        if isinstance(node, dict) and node:
            return set().union(*(leaves(v, f"{prefix}{k}.") for k, v in node.items()))
        return {prefix.rstrip(".")}

    missing = leaves(chart().values) - documented
    assert missing == set(), f"README values table misses: {sorted(missing)}"


def test_an_enabled_ingress_needs_at_least_one_host() -> None:
    """`hosts: []` would render `rules: null`, an Ingress that routes nothing."""
    message = render_error({"ingress": {"enabled": True, "hosts": []}})
    assert "/ingress/hosts" in message
    assert not render({"ingress": {"enabled": False, "hosts": []}}).all("Ingress")
