"""Resource names stay within what Kubernetes accepts for every release name Helm allows.

A StatefulSet's pods carry the label `controller-revision-hash: <statefulset>-<hash>`; label
values are at most 63 characters and the hash takes up to 11 (a dash and 10), so a
StatefulSet name longer than 52 characters renders and applies but its pods are never
created. Services and pod host names are DNS-1035 labels (63). Helm refuses release names
longer than 53 characters.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
from chartlib import Rendered, container, env, render

STATEFULSET_MAX = 52
LABEL_MAX = 63
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_1123_SUBDOMAIN = re.compile(rf"^{DNS_1123_LABEL}(\.{DNS_1123_LABEL})*$")

LONG_NAMES = {
    "45 characters": "frontend-production-eu-west-1-blue-green-0001",
    "45 characters with the chart's name": "opennebula-production-frontend-eu-west-1-blue",
    "53 characters (Helm's maximum)": "cloud-frontend-production-eu-west-1-blue-green-canary",
}
DATABASES: dict[str, dict[str, Any]] = {
    "mariadb": {},
    "sqlite": {"database": {"type": "sqlite"}},
    "external": {"database": {"type": "external",
                              "external": {"host": "db.example.org", "password": "pw"}}},
}
EVERYTHING_ON: dict[str, Any] = {
    "ingress": {"enabled": True},
    "networkPolicy": {"enabled": True, "apiFrom": [{"podSelector": {}}]},
    "podDisruptionBudget": {"enabled": True},
    "httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]},
}


def test_the_long_release_names_have_the_lengths_they_claim() -> None:
    assert [len(n) for n in LONG_NAMES.values()] == [45, 45, 53]
    for name in LONG_NAMES.values():
        helm.validate_release_name(name)  # Helm accepts them all
    with pytest.raises(helm.HelmError):
        helm.validate_release_name(LONG_NAMES["53 characters (Helm's maximum)"] + "x")


def check_names(rendered: Rendered) -> None:
    for doc in rendered.docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 253 and DNS_1123_SUBDOMAIN.match(name), (doc["kind"], name)
    services = rendered.names("Service")
    for name in services:
        assert len(name) <= LABEL_MAX and DNS_1035.match(name), f"Service {name}"
    for sts in rendered.all("StatefulSet"):
        name = sts["metadata"]["name"]
        assert len(name) <= STATEFULSET_MAX, f"StatefulSet {name} ({len(name)} > 52)"
        assert len(f"{name}-0") <= LABEL_MAX  # the pod's host name
        assert sts["spec"]["serviceName"] in services
    for pod in rendered.all("Pod"):
        assert len(pod["metadata"]["name"]) <= LABEL_MAX
    for kind in ("StatefulSet", "Service", "Secret", "ConfigMap", "Pod"):
        names = [d["metadata"]["name"] for d in rendered.all(kind)]
        assert len(names) == len(set(names)), f"two {kind}s share a name: {names}"


@pytest.mark.parametrize("release", LONG_NAMES.values(), ids=LONG_NAMES.keys())
@pytest.mark.parametrize("database", sorted(DATABASES))
def test_long_release_names_render_names_within_kubernetes_limits(
    release: str, database: str
) -> None:
    rendered = render({**DATABASES[database], **EVERYTHING_ON}, name=release)
    check_names(rendered)
    frontend = next(s for s in rendered.all("StatefulSet")
                    if s["metadata"]["labels"]["app.kubernetes.io/component"] == "frontend")
    variables = env(container(rendered, frontend["metadata"]["name"]))
    hostname = variables["OPENNEBULA_HOSTNAME"].replace("$(POD_NAME)", frontend["metadata"]["name"]
                                                        + "-0")
    assert all(len(label) <= LABEL_MAX for label in hostname.split("."))
    if database == "mariadb":
        assert variables["DB_HOST"] in rendered.names("Service")


def test_names_of_releases_that_already_fit_do_not_change() -> None:
    """An upgrade must not rename what exists: short names are kept exactly."""
    rendered = render()
    assert rendered.names("StatefulSet") == {"one-opennebula", "one-opennebula-mariadb"}
    assert rendered.names("Service") == {
        "one-opennebula", "one-opennebula-headless", "one-opennebula-monitord",
        "one-opennebula-mariadb",
    }
    assert render(name="opennebula").names("StatefulSet") == {"opennebula", "opennebula-mariadb"}
