"""The front-end pod: probes, stop budget, security, writable mounts, config and rollouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chartlib import CHART_DIR, FULLNAME, Rendered, chart, container, env, render, render_error
from ruamel.yaml import YAML

from onerun.catalogue import INSTALLED_BY
from onerun.layout import Layout
from onerun.runtime.services import plan_programs
from onerun.runtime.supervisor import stop_budget_seconds
from onerun.settings import Settings, load_settings
from onerun.upgrade import ONEDB_KILL_AFTER

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def pod_spec(rendered: Rendered, name: str = FULLNAME) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.get("StatefulSet", name)["spec"]["template"]["spec"]
    return spec


def test_probes_run_onerun_probe_with_timeouts_above_its_deadline() -> None:
    values = chart().values["opennebula"]
    deadline = float(values["probes"]["deadlineSeconds"])
    c = container(render())
    for probe, mode in zip(PROBES, ("startup", "readiness", "liveness"), strict=True):
        assert c[probe]["exec"]["command"] == ["onerun", "probe", mode, "--timeout", str(deadline)]
        assert c[probe]["timeoutSeconds"] >= deadline + 1


UPGRADE_ALLOWANCE = 600  # backup + onedb upgrade + oned's start, on top of the DB wait
DOCS = CHART_DIR.parents[1] / "docs"


def test_startup_budget_covers_db_wait_and_upgrade_and_is_documented() -> None:
    rendered = render()
    startup = container(rendered)["startupProbe"]
    period, threshold = startup["periodSeconds"], startup["failureThreshold"]
    budget = period * threshold
    wait = int(env(container(rendered))["ONERUN_DB_WAIT_TIMEOUT"])
    assert budget >= wait + UPGRADE_ALLOWANCE
    assert f"startup budget:\n{budget} s" in rendered.notes
    times = "\N{MULTIPLICATION SIGN}"  # the README's table uses the real sign
    docs = {
        "README.md": (CHART_DIR / "README.md", f"{period} s {times} {threshold} = **{budget} s**"),
        "values.yaml": (CHART_DIR / "values.yaml", f"failureThreshold = {budget} s"),
        "chart.md": (DOCS / "chart.md", f"{period} s x {threshold} = {budget} s"),
        "probes.md": (DOCS / "probes.md", f"{threshold} x {period} s = {budget} s"),
    }
    for name, (path, formula) in docs.items():
        text = " ".join(path.read_text().split())  # line breaks do not matter
        refusal = "dbWaitTimeoutSeconds + 60 s"
        for stated in (formula, f"{wait} s", f"{UPGRADE_ALLOWANCE} s", refusal):
            assert stated.replace("`", "") in text.replace("`", ""), (name, stated)


def startup_values(wait: int, period: int, threshold: int, db: str = "mariadb") -> dict[str, Any]:
    return {
        "database": {"type": db},
        "opennebula": {
            "dbWaitTimeoutSeconds": wait,
            "probes": {"startup": {"periodSeconds": period, "failureThreshold": threshold}},
        },
    }


def test_a_startup_budget_below_the_db_wait_plus_a_minute_is_refused() -> None:
    message = render_error(startup_values(wait=300, period=10, threshold=35))
    assert "opennebula.probes.startup" in message and "350 s" in message
    assert "dbWaitTimeoutSeconds + 60 (360 s)" in message and "failureThreshold" in message
    # raising only the DB wait past the default budget is refused as well
    default = chart().values["opennebula"]["probes"]["startup"]
    budget = default["periodSeconds"] * default["failureThreshold"]
    assert "dbWaitTimeoutSeconds" in render_error({"opennebula": {"dbWaitTimeoutSeconds": budget}})


def test_a_startup_budget_of_exactly_the_db_wait_plus_a_minute_renders() -> None:
    startup = container(render(startup_values(wait=300, period=10, threshold=36)))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 360


@pytest.mark.parametrize("db", ["external", "mariadb"])
def test_the_budget_check_applies_to_every_waited_for_database(db: str) -> None:
    values = startup_values(wait=120, period=5, threshold=35, db=db)
    if db == "external":
        values["database"]["external"] = {"host": "db.example.com", "existingSecret": "one-db"}
    assert "(180 s)" in render_error(values)


def test_sqlite_has_no_db_wait_so_a_short_startup_budget_renders() -> None:
    startup = container(render(startup_values(wait=300, period=10, threshold=6, db="sqlite")))
    assert startup["startupProbe"]["failureThreshold"] == 6


def onerun_stop_budget(root: Path) -> int:
    """onerun's own worst-case stop time with every service installed (docs/processes.md)."""
    for binary in INSTALLED_BY.values():
        path = root / binary.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    settings = load_settings({"ONEADMIN_PASSWORD": "stand-in-password-1"}, root=root)
    programs = plan_programs(
        settings, Layout(root), maintenance=False, heal_service_auth=False, record_start=None
    )
    assert {p.name for p in programs} >= set(INSTALLED_BY)  # every service counted
    return stop_budget_seconds(programs)


def test_grace_period_covers_onerun_stop_budget(tmp_path: Path) -> None:
    budget = onerun_stop_budget(tmp_path)
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    minimum = schema["properties"]["terminationGracePeriodSeconds"]["minimum"]
    assert minimum >= budget + 5  # a margin for supervisord itself
    assert pod_spec(render())["terminationGracePeriodSeconds"] >= minimum
    message = render_error({"terminationGracePeriodSeconds": minimum - 1})
    assert "terminationGracePeriodSeconds" in message and f"want {minimum}" in message
    assert "stopBudgetSeconds" not in chart().values["opennebula"]  # not a user value


def test_a_probe_timeout_too_close_to_the_deadline_is_refused() -> None:
    message = render_error({"opennebula": {"probes": {"liveness": {"timeoutSeconds": 1}}}})
    assert "opennebula.probes.liveness.timeoutSeconds" in message and "deadlineSeconds" in message


def test_native_grpc_probes_for_7_2_and_later() -> None:
    c = container(render({"opennebula": {"probes": {"grpc": {"enabled": True}}}}))
    assert c["startupProbe"]["grpc"] == {"port": 2634}
    assert c["livenessProbe"]["grpc"] == {"port": 2634}
    assert c["readinessProbe"]["exec"]["command"][:3] == ["onerun", "probe", "readiness"]
    assert "exec" in container(render())["livenessProbe"]  # off by default
    message = render_error(
        {"image": {"tag": "7.0.0"}, "opennebula": {"probes": {"grpc": {"enabled": True}}}}
    )
    assert "7.2" in message


def test_security_contexts_are_restrictive_on_every_container() -> None:
    rendered = render({"opennebula": {"existingSecret": "creds"}})  # test pod gets an init one
    pods = [d["spec"]["template"]["spec"] for d in rendered.all("StatefulSet")]
    pods += [d["spec"] for d in rendered.all("Pod")]
    assert len(pods) == 3
    for spec in pods:
        pod_ctx = spec["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"] + spec.get("initContainers", []):
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert "privileged" not in ctx and "add" not in ctx["capabilities"]
    front = pod_spec(rendered)["securityContext"]
    assert (front["runAsUser"], front["fsGroup"]) == (9869, 9869)


def test_writable_places_the_image_needs_are_mounted() -> None:
    spec = pod_spec(render())
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/var/lib/one"] == "data"
    claim = render().get("StatefulSet", FULLNAME)["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    for path in ("/etc/one", "/var/log/one", "/run", "/run/lock", "/tmp", "/var/tmp"):
        assert "emptyDir" in volumes[mounts[path]], path
    assert mounts["/var/tmp"] != mounts["/tmp"]
    assert volumes[mounts["/var/log/one"]]["emptyDir"]["sizeLimit"] == "1Gi"


def test_config_is_rendered_into_the_configmap_onerun_reads() -> None:
    config = {
        "oned": {"DEFAULT_UMASK": 117, "VNC_PORTS": {"START": 6000}},
        "oneflow": {":host": "0.0.0.0"},
    }
    rendered = render({"opennebula": {"config": config}})
    path = env(container(rendered))["ONERUN_CONFIG"]
    directory, filename = path.rsplit("/", 1)
    spec = pod_spec(rendered)
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    configmap = rendered.get("ConfigMap", volume["configMap"]["name"])
    assert YAML(typ="safe", pure=True).load(configmap["data"][filename]) == config
    empty = render().get("ConfigMap", volume["configMap"]["name"])
    assert YAML(typ="safe", pure=True).load(empty["data"][filename]) == {}


def annotations(rendered: Rendered) -> dict[str, str]:
    pod = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]
    result: dict[str, str] = pod["metadata"]["annotations"]
    return result


def test_checksums_roll_the_pod_on_config_or_secret_changes_only() -> None:
    base = annotations(render())
    assert base == annotations(render())  # stable, although generated secrets are random
    changed = annotations(render({"opennebula": {"config": {"oned": {"DEFAULT_UMASK": 117}}}}))
    assert changed["checksum/config"] != base["checksum/config"]
    assert changed["checksum/secret"] == base["checksum/secret"]
    password = annotations(render({"opennebula": {"oneadminPassword": "New-pw-1"}}))
    assert password["checksum/secret"] != base["checksum/secret"]
    assert password["checksum/config"] == base["checksum/config"]
    unrelated = annotations(render({"resources": {"requests": {"cpu": "1"}}}))
    assert unrelated == base


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "$(POD_NAME).one-opennebula-headless.cloud.svc.cluster.local"),
        ({"opennebula": {"hostname": "one.example.com"}}, "one.example.com"),
        ({"opennebula": {"monitorAddress": "192.0.2.10"}}, "192.0.2.10"),
        (
            {"monitord": {"service": {"type": "LoadBalancer", "loadBalancerIP": "192.0.2.20"}}},
            "192.0.2.20",
        ),
        ({"monitord": {"hostPort": True}}, {"fieldRef": {"fieldPath": "status.hostIP"}}),
    ],
)
def test_monitor_address_defaults_to_what_hypervisors_can_reach(
    values: dict[str, Any], expected: Any
) -> None:
    assert env(container(render(values)))["OPENNEBULA_MONITOR_ADDRESS"] == expected


def test_onerun_settings_come_from_values() -> None:
    variables = env(
        container(
            render(
                {
                    "opennebula": {
                        "services": ["oned", "fireedge"],
                        "maintenance": True,
                        "logFormat": "json",
                        "dbWaitTimeoutSeconds": 60,
                        "backupKeep": 3,
                        "listenAddress": "::",
                    }
                }
            )
        )
    )
    assert variables["ONERUN_SERVICES"] == "oned,fireedge"
    assert variables["ONERUN_MAINTENANCE"] == "1"
    assert variables["ONERUN_LOG_FORMAT"] == "json"
    assert variables["ONERUN_DB_WAIT_TIMEOUT"] == "60"
    assert variables["ONERUN_BACKUP_KEEP"] == "3"
    assert variables["ONERUN_LISTEN_ADDRESS"] == "::"
    assert "ONERUN_SERVICES" not in env(container(render()))  # default: all installed


OPTIONAL_SETTINGS = {  # value -> (variable, what a set value renders)
    "trustOneKey": ("ONERUN_TRUST_ONE_KEY", True, "1"),
    "backupKeepManual": ("ONERUN_BACKUP_KEEP_MANUAL", 10, "10"),
    "upgradeStopGraceSeconds": ("ONERUN_UPGRADE_STOP_GRACE", 12.5, "12.5"),
}


@pytest.mark.parametrize("value", sorted(OPTIONAL_SETTINGS))
def test_optional_onerun_settings_render_only_when_set(value: str) -> None:
    variable, given, rendered = OPTIONAL_SETTINGS[value]
    assert variable not in env(container(render()))  # the defaults: onerun's own apply
    assert env(container(render({"opennebula": {value: given}})))[variable] == rendered


def test_unset_optional_settings_render_nothing_when_given_as_null_or_false() -> None:
    unset = {"trustOneKey": False, "backupKeepManual": None, "upgradeStopGraceSeconds": None}
    variables = env(container(render({"opennebula": unset})))
    assert not {variable for variable, _, _ in OPTIONAL_SETTINGS.values()} & set(variables)


def test_a_zero_upgrade_stop_grace_is_rendered_not_dropped() -> None:
    """0 (stop onedb at once) is a value, not "unset": a plain `if` would drop it."""
    assert env(container(render({"opennebula": {"upgradeStopGraceSeconds": 0}})))[
        "ONERUN_UPGRADE_STOP_GRACE"
    ] == "0"


BAD_OPTIONAL_VALUES = [
    ("trustOneKey", "1", "got string, want boolean"),
    ("backupKeepManual", 0, "minimum: got 0, want 1"),
    ("backupKeepManual", 1001, "maximum: got 1,001, want 1,000"),
    ("backupKeepManual", 2.5, "want null or integer"),
    ("backupKeepManual", "10", "got string, want null or integer"),
    ("upgradeStopGraceSeconds", -1, "minimum: got -1, want 0"),
    ("upgradeStopGraceSeconds", 3601, "maximum: got 3,601, want 3,600"),
    ("upgradeStopGraceSeconds", "20s", "got string, want null or number"),
]


@pytest.mark.parametrize(("value", "bad", "complaint"), BAD_OPTIONAL_VALUES)
def test_schema_rejects_bad_optional_settings(value: str, bad: Any, complaint: str) -> None:
    message = render_error({"opennebula": {value: bad}})
    assert f"/opennebula/{value}" in message and complaint in message


RESTORE_ALLOWANCE = 30  # seconds the chart leaves for the restore after onedb's stop


@pytest.mark.parametrize("period", [90, 120])
def test_an_upgrade_stop_grace_without_room_for_stop_and_restore_is_refused(period: int) -> None:
    limit = period - ONEDB_KILL_AFTER - RESTORE_ALLOWANCE  # 55 s at the default 90 s
    fits = {"terminationGracePeriodSeconds": period,
            "opennebula": {"upgradeStopGraceSeconds": limit - 0.5}}
    assert env(container(render(fits)))["ONERUN_UPGRADE_STOP_GRACE"] == str(limit - 0.5)
    message = render_error({"terminationGracePeriodSeconds": period,
                            "opennebula": {"upgradeStopGraceSeconds": limit}})
    assert f"opennebula.upgradeStopGraceSeconds ({limit:g} s)" in message
    assert f"terminationGracePeriodSeconds ({period} s)" in message
    assert "onerun restore" in message
    assert f"Lower opennebula.upgradeStopGraceSeconds below {limit:g}" in message
    assert f"raise terminationGracePeriodSeconds above {period:g}" in message


def test_onerun_default_upgrade_stop_grace_fits_the_smallest_grace_period() -> None:
    """Unset, the chart checks nothing: onerun's default must fit the schema's minimum."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    minimum = schema["properties"]["terminationGracePeriodSeconds"]["minimum"]
    default = Settings.__dataclass_fields__["upgrade_stop_grace"].default
    assert default + ONEDB_KILL_AFTER + RESTORE_ALLOWANCE < minimum
    assert render({"terminationGracePeriodSeconds": minimum}).all("StatefulSet")


def test_the_notes_ask_to_remove_the_one_key_trust_after_the_start() -> None:
    notes = render({"opennebula": {"trustOneKey": True}}).notes
    assert "opennebula.trustOneKey" in notes and "back to false" in notes
    assert "trustOneKey" not in render().notes


def test_image_defaults_to_the_app_version_and_runs_onerun_start() -> None:
    c = container(render())
    assert c["image"] == f"ghcr.io/onerun/opennebula:{chart().metadata['appVersion']}"
    assert c["command"] == ["onerun", "start"]
    pinned = container(render({"image": {"tag": "7.2.1", "digest": "sha256:" + "a" * 64}}))
    assert pinned["image"] == "ghcr.io/onerun/opennebula:7.2.1@sha256:" + "a" * 64


def test_schema_rejects_unknown_keys_and_bad_services() -> None:
    assert "additional properties 'replicas' not allowed" in render_error({"replicas": 1})
    assert "/opennebula/services" in render_error({"opennebula": {"services": ["fireedge"]}})
    assert "/opennebula/services/1" in render_error(
        {"opennebula": {"services": ["oned", "sunstone"]}}
    )


def test_extras_and_placement_reach_the_pod() -> None:
    rendered = render(
        {
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
            "extraVolumes": [{"name": "extra", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
            "extraObjects": [
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{ .Release.Name }}-extra'\n"
            ],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {}},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ],
        }
    )
    spec = pod_spec(rendered)
    assert env(spec["containers"][0])["TZ"] == "UTC"
    assert {"name": "extra", "emptyDir": {}} in spec["volumes"]
    assert {"name": "extra", "mountPath": "/extra"} in spec["containers"][0]["volumeMounts"]
    assert "one-extra" in rendered.names("ConfigMap")
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["tolerations"] and spec["affinity"] and spec["topologySpreadConstraints"]


def test_pdb_is_opt_in() -> None:
    assert not render().all("PodDisruptionBudget")
    pdb = render({"podDisruptionBudget": {"enabled": True}}).get("PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"


def test_pods_are_managed_in_parallel_so_a_broken_pod_can_be_rolled_back() -> None:
    """With OrderedReady the controller waits for a broken pod-0 to become Ready before it
    applies the reverted template (Kubernetes' "forced rollback" case); the field is
    immutable, so it is set from the first install on."""
    rendered = render()
    policies = {s["metadata"]["name"]: s["spec"]["podManagementPolicy"]
                for s in rendered.all("StatefulSet")}
    assert policies == {FULLNAME: "Parallel", f"{FULLNAME}-mariadb": "Parallel"}


def test_notes_warn_when_nothing_is_persisted() -> None:
    assert "persistence.enabled" not in render().notes
    notes = render({"persistence": {"enabled": False}}).notes
    warning = notes[notes.index("WARNING: persistence.enabled is false"):]
    assert "emptyDir" in warning and "one_key" in warning
