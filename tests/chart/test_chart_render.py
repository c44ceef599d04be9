"""Lint strictly and validate every rendered document against the Kubernetes 1.30 schemas."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from chartlib import CHART_DIR, KUBE_VERSION, chart, render
from ruamel.yaml import YAML

# Custom resources have no schema in kubernetes-validate: they are skipped by name, and only
# these. HTTPRoute is the Gateway API's (a CRD installed with the Gateway implementation).
CRD_KINDS = {("gateway.networking.k8s.io/v1", "HTTPRoute")}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults (bundled mariadb)": {},
    "sqlite": {"database": {"type": "sqlite"}},
    "external with password": {
        "database": {
            "type": "external",
            "external": {"host": "db.example.com", "password": "s3cret"},
        }
    },
    "external with existingSecret": {
        "database": {"type": "external", "external": {"host": "10.0.0.5", "existingSecret": "db"}}
    },
    "existing secrets everywhere": {
        "opennebula": {"existingSecret": "one-creds", "ssh": {"existingSecret": "one-ssh"}},
        "database": {"mariadb": {"auth": {"existingSecret": "mariadb-creds"}}},
    },
    "everything optional on": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "tls": [{"secretName": "one-tls", "hosts": ["opennebula.example.com"]}],
        },
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "gw", "namespace": "infra"}],
            "hostnames": ["one.example.com"],
        },
        "networkPolicy": {
            "enabled": True,
            "apiFrom": [{"namespaceSelector": {"matchLabels": {"team": "cloud"}}}],
        },
        "podDisruptionBudget": {"enabled": True},
        "monitord": {
            "hostPort": True,
            "service": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": ["192.0.2.0/24"],
            },
        },
        "opennebula": {
            "config": {"oned": {"DEFAULT_UMASK": 117}},
            "probes": {"grpc": {"enabled": True}},
        },
        "persistence": {"existingClaim": "one-data"},
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "extraVolumes": [{"name": "extra", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
        "extraObjects": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "{{ .Release.Name }}-extra"},
                "data": {"a": "b"},
            }
        ],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "x"}},
            }
        ],
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
    },
    "HA zone of three on sqlite, network policy": {
        "replicaCount": 3,
        "database": {"type": "sqlite"},
        "networkPolicy": {"enabled": True},
    },
    "maintenance, services subset, no persistence": {
        "opennebula": {"maintenance": True, "services": ["oned", "fireedge", "guacd"]},
        "persistence": {"enabled": False},
        "service": {"type": "LoadBalancer"},
        "monitord": {"service": {"type": "NodePort", "nodePorts": {"tcp": 30124, "udp": 30124}}},
    },
}


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_lint_is_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    assert report["messages"] == [], report["messages"]


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_document_passes_strict_kubernetes_schemas(values: dict[str, Any]) -> None:
    rendered = render(values)
    validated = 0
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")
        validated += 1
    assert validated >= 8  # StatefulSet, three Services, ConfigMap, Secret(s), SA, test Pod


def test_strict_validation_catches_a_misspelt_field() -> None:
    """Guards the test above: without strict mode an unknown field would pass silently."""
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_only_the_httproute_is_skipped_as_a_crd() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in render(SCENARIOS["everything optional on"]).docs}
    assert kinds & CRD_KINDS == CRD_KINDS
    assert {kind for _, kind in kinds} >= {
        "StatefulSet",
        "Service",
        "Secret",
        "ConfigMap",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Pod",
    }


# The values files `ct install` installs on the kind cluster (build.yml, job chart).
CT_VALUES = {p.name: YAML(typ="safe", pure=True).load(p.read_text()) or {}
             for p in sorted((CHART_DIR / "ci").glob("*-values.yaml"))}


def test_ct_install_covers_the_bundled_mariadb_and_sqlite() -> None:
    default_type = chart().values["database"]["type"]
    types = {name: (values.get("database") or {}).get("type", default_type)
             for name, values in CT_VALUES.items()}
    assert types == {"default-values.yaml": "mariadb", "sqlite-values.yaml": "sqlite"}
    assert CT_VALUES["default-values.yaml"] == {}  # the defaults, as `helm install` gives them


@pytest.mark.parametrize("name", sorted(CT_VALUES))
def test_ct_values_lint_cleanly(name: str) -> None:
    report = helm.lint(CHART_DIR, CT_VALUES[name], strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == [] and report["messages"] == [], report


def test_the_packaged_chart_leaves_the_ct_values_out(tmp_path: Path) -> None:
    archive = helm.package(CHART_DIR, destination=tmp_path)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "opennebula/values.yaml" in names
    assert not [n for n in names if n.startswith("opennebula/ci/")]
