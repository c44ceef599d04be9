"""Helpers for the chart tests: render with Helm's own Go code (helm-python-sdk), parse, look up.

Plain functions, not fixtures: a conftest.py here would shadow tests/conftest.py for the
other test directories (both import as `conftest`).

Rendering is offline: Helm's `lookup` returns nothing, exactly as under `helm template` or a
GitOps tool without cluster access, so generated secrets are new at every render here.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from ruamel.yaml import YAML

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "opennebula"
RELEASE = "one"
NAMESPACE = "cloud"
KUBE_VERSION = "1.30"


@dataclass(frozen=True)
class Rendered:
    """The documents of one render, with the NOTES text kept apart."""

    docs: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.all(kind)}


def parse(manifests: dict[str, str]) -> Rendered:
    """Split Helm's {template: text} into YAML documents (empty ones dropped)."""
    yaml = YAML(typ="safe", pure=True)
    docs: list[dict[str, Any]] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(d for d in yaml.load_all(io.StringIO(text)) if d)
    return Rendered(docs, notes)


@functools.cache
def chart() -> helm.Chart:
    """The chart, loaded once per test process (charts are immutable)."""
    return helm.Chart.load(CHART_DIR)


def render(values: dict[str, Any] | None = None, name: str = RELEASE) -> Rendered:
    """What `helm install <name> -n cloud` would render offline with ``values``."""
    return parse(chart().render(values, name=name, namespace=NAMESPACE, is_install=True))


def render_error(values: dict[str, Any]) -> str:
    """The message Helm gives when it refuses ``values`` (fails the test if it renders)."""
    with pytest.raises(helm.HelmError) as caught:
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(caught.value)


FULLNAME = f"{RELEASE}-opennebula"


def container(rendered: Rendered, sts: str = FULLNAME, name: str = "opennebula") -> dict[str, Any]:
    spec = rendered.get("StatefulSet", sts)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def secret_item_behind(rendered: Rendered, path: str) -> tuple[str, str]:
    """(secret name, key) of the Secret item mounted at file ``path`` in the front-end pod."""
    spec = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "opennebula")
    for mount in c["volumeMounts"]:
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            rest = path[len(mount["mountPath"].rstrip("/")) + 1 :]
            item = next(i for i in volume["secret"]["items"] if i["path"] == rest)
            return volume["secret"]["secretName"], item["key"]
    raise AssertionError(f"{path} is not in a mounted secret")


def secret_value(rendered: Rendered, name: str, key: str) -> str:
    return base64.b64decode(rendered.get("Secret", name)["data"][key]).decode()


# --- the front-end container as Kubernetes would start it --------------------------------

POD_NAME = f"{FULLNAME}-0"
HOST_IP = "192.0.2.10"  # TEST-NET-1: what status.hostIP would give
_FIELDS = {"metadata.name": POD_NAME, "metadata.namespace": NAMESPACE, "status.hostIP": HOST_IP}
# The kubelet gives every container the API server's address, enableServiceLinks or not.
KUBELET_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class MountedFile:
    """A file Kubernetes projects from a Secret or ConfigMap: content, mode, whether secret."""

    content: bytes
    mode: int
    secret: bool


@dataclass(frozen=True)
class FrontendRuntime:
    """The front-end container of one render as the kubelet would run it."""

    env: dict[str, str]  # $(VAR) and fieldRefs resolved, container paths
    files: dict[str, MountedFile]  # container path -> projected file
    empty_dirs: dict[str, str]  # mountPath -> sizeLimit ("" when none)
    data_path: str  # the PVC (or emptyDir) mount of /var/lib/one
    mounts: list[dict[str, Any]]  # volumeMounts, for writability checks
    volumes: dict[str, dict[str, Any]]


def _expand(value: str, seen: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: only variables defined earlier; others stay as they are."""
    return _VAR_REF.sub(lambda m: seen.get(m[1], m[0]), value)


def _data_of(rendered: Rendered, kind: str, name: str) -> dict[str, bytes]:
    doc = rendered.get(kind, name)
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in doc.get("data", {}).items()}
    return {k: v.encode() for k, v in doc.get("data", {}).items()}


def frontend_runtime(rendered: Rendered, pod_name: str = POD_NAME) -> FrontendRuntime:
    """Env, projected files and writable mounts of the front-end container of ``rendered``,
    as pod ``pod_name`` of the StatefulSet would have them.

    Secrets the chart does not render (existingSecret) cannot be projected and fail here.
    """
    fields = {**_FIELDS, "metadata.name": pod_name}
    spec = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "opennebula")
    volumes = {v["name"]: v for v in spec["volumes"]}
    env: dict[str, str] = dict(KUBELET_ENV)
    for item in c["env"]:
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
        else:
            ref = item["valueFrom"]
            if "fieldRef" in ref:
                env[item["name"]] = fields[ref["fieldRef"]["fieldPath"]]
            else:
                key_ref = ref["secretKeyRef"]
                env[item["name"]] = _data_of(rendered, "Secret", key_ref["name"])[
                    key_ref["key"]
                ].decode()
    files: dict[str, MountedFile] = {}
    empty_dirs: dict[str, str] = {}
    data_path = ""
    for mount in c["volumeMounts"]:
        path = mount["mountPath"].rstrip("/")
        if mount["name"] == "data":
            data_path = path
            continue
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            empty_dirs[path] = str((volume["emptyDir"] or {}).get("sizeLimit", ""))
            continue
        kind = "Secret" if "secret" in volume else "ConfigMap"
        source = volume["secret"] if kind == "Secret" else volume["configMap"]
        name = source["secretName"] if kind == "Secret" else source["name"]
        data = _data_of(rendered, kind, name)
        mode = int(source.get("defaultMode", 0o644))
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for entry in items:
            files[f"{path}/{entry['path']}"] = MountedFile(
                data[entry["key"]], int(entry.get("mode", mode)), kind == "Secret"
            )
    return FrontendRuntime(env, files, empty_dirs, data_path, c["volumeMounts"], volumes)
