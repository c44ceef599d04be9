"""ONERUN_HA_*: the zone's settings, their defaults and every refusal (exit 2, docs/ha.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerun.errors import EXIT_SETTINGS, SettingsError
from onerun.settings import HA_BROADCAST_TIMEOUT_MS, HA_ELECTION_TIMEOUT_MS, load_settings

MEMBERS = "one-0.h:2640,one-1.h:2640,one-2.h:2640"
ZONE = {"ONERUN_HA_MEMBERS": MEMBERS, "ONERUN_HA_ADDRESS": "one-1.h:2640",
        "ONEADMIN_PASSWORD": "pw", "ONE_KEY": "0123456789abcdef0123456789abcdef"}


def problems(environ: dict[str, str]) -> dict[str, str]:
    """{variable: rule and fix} of every problem ``environ`` causes."""
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    assert info.value.exit_code == EXIT_SETTINGS
    return {p.variable: f"{p.rule} (fix: {p.fix})" for p in info.value.problems}


def test_no_members_no_zone() -> None:
    assert load_settings({}).ha is None
    assert load_settings({"ONERUN_HA_ADDRESS": "x:1", "ONERUN_HA_SERVER_NAME": "!"}).ha is None


def test_defaults_from_the_member_address_and_the_pod_name() -> None:
    ha = load_settings(ZONE).ha
    assert ha is not None
    assert ha.peers == ("one-0.h:2640", "one-2.h:2640") and ha.listen_port == 2640
    assert ha.server_name == "one-1"
    assert ha.endpoint == "http://one-1.h:2633/RPC2"
    assert (ha.election_timeout_ms, ha.broadcast_timeout_ms) == (HA_ELECTION_TIMEOUT_MS,
                                                                 HA_BROADCAST_TIMEOUT_MS)
    named = load_settings({**ZONE, "POD_NAME": "opennebula-1"}).ha
    assert named is not None and named.server_name == "opennebula-1"


def test_the_endpoint_follows_onerun_configs_port(tmp_path: Path) -> None:
    config = tmp_path / "onerun.yaml"
    config.write_text("oned: {PORT: 2643}\n")
    ha = load_settings({**ZONE, "ONERUN_CONFIG": str(config)}).ha
    assert ha is not None and ha.oned_port == 2643
    assert ha.endpoint == "http://one-1.h:2643/RPC2"


@pytest.mark.parametrize(("change", "variable", "words"), [
    ({"ONERUN_HA_MEMBERS": "a:1,b:2"}, "ONERUN_HA_MEMBERS", "odd number"),
    ({"ONERUN_HA_MEMBERS": "a:1,b:2,c:3,d:4"}, "ONERUN_HA_MEMBERS", "odd number"),
    ({"ONERUN_HA_MEMBERS": "a:1,b,c:3"}, "ONERUN_HA_MEMBERS", "'b' not host:port"),
    ({"ONERUN_HA_MEMBERS": "a:1,a:1,c:3"}, "ONERUN_HA_MEMBERS", "twice"),
    ({"ONERUN_HA_MEMBERS": "a:1,b:99999,c:3"}, "ONERUN_HA_MEMBERS", "not host:port"),
    ({"ONERUN_HA_ADDRESS": "one-3.h:2640"}, "ONERUN_HA_ADDRESS", "not one of"),
    ({"ONERUN_HA_ADDRESS": ""}, "ONERUN_HA_ADDRESS", "not one of"),
    ({"ONERUN_HA_SERVER_NAME": "a b"}, "ONERUN_HA_SERVER_NAME", "not a valid"),
    ({"ONERUN_HA_ENDPOINT": 'http://x"/RPC2'}, "ONERUN_HA_ENDPOINT", "not an http"),
    ({"ONERUN_HA_ELECTION_TIMEOUT_MS": "100"}, "ONERUN_HA_ELECTION_TIMEOUT_MS", "500 to"),
    ({"ONERUN_HA_BROADCAST_TIMEOUT_MS": "1000"}, "ONERUN_HA_BROADCAST_TIMEOUT_MS", "quarter"),
    ({"ONERUN_HA_WAIT_TIMEOUT": "-1"}, "ONERUN_HA_WAIT_TIMEOUT", "number from 0"),
    ({"ONEADMIN_PASSWORD": ""}, "ONEADMIN_PASSWORD", "same one"),
    ({"ONE_KEY": ""}, "ONE_KEY", "same one"),
    ({"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": "x"}, "ONERUN_HA_MEMBERS",
     "sqlite only"),
])
def test_refusals_name_the_variable_and_the_fix(change: dict[str, str], variable: str,
                                                words: str) -> None:
    found = problems({**ZONE, **change})
    assert variable in found, found
    assert words in found[variable]


@pytest.mark.parametrize(("yaml", "variable"), [
    ("oned: {FEDERATION: {SERVER_ID: 1}}\n", "ONERUN_CONFIG: oned.FEDERATION"),
])
def test_onerun_owns_federation_in_a_zone(tmp_path: Path, yaml: str, variable: str) -> None:
    config = tmp_path / "onerun.yaml"
    config.write_text(yaml)
    assert variable in problems({**ZONE, "ONERUN_CONFIG": str(config)})
    assert load_settings({"ONERUN_CONFIG": str(config)}).ha is None  # alone: as before


def test_raft_timers_are_set_in_one_place(tmp_path: Path) -> None:
    config = tmp_path / "onerun.yaml"
    config.write_text("oned: {RAFT: {ELECTION_TIMEOUT_MS: 3000, LOG_RETENTION: 5000}}\n")
    found = problems({**ZONE, "ONERUN_CONFIG": str(config)})
    assert list(found) == ["ONERUN_HA_ELECTION_TIMEOUT_MS"]
    config.write_text("oned: {RAFT: {LOG_RETENTION: 5000}}\n")
    assert load_settings({**ZONE, "ONERUN_CONFIG": str(config)}).ha is not None


# --- ONERUN_HA_LABEL_POD: the Raft hooks label the pod (docs/ha.md, "Leader routing") ---

IN_POD = {"ONERUN_HA_LABEL_POD": "1", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
          "KUBERNETES_SERVICE_PORT": "443", "POD_NAMESPACE": "cloud", "POD_NAME": "one-1"}


def test_labelling_is_off_unless_asked() -> None:
    ha = load_settings({**ZONE, **IN_POD, "ONERUN_HA_LABEL_POD": "0"}).ha
    assert ha is not None and ha.label_pod is None


def test_labelling_knows_the_api_and_the_pod() -> None:
    ha = load_settings({**ZONE, **IN_POD}).ha
    assert ha is not None and ha.label_pod is not None
    assert ha.label_pod.api == "https://10.96.0.1:443"
    assert (ha.label_pod.namespace, ha.label_pod.pod) == ("cloud", "one-1")


def test_an_ipv6_api_server_is_bracketed() -> None:
    ha = load_settings({**ZONE, **IN_POD, "KUBERNETES_SERVICE_HOST": "fd00:10:96::1"}).ha
    assert ha is not None and ha.label_pod is not None
    assert ha.label_pod.api == "https://[fd00:10:96::1]:443"


def test_labelling_outside_a_zone_is_ignored() -> None:
    assert load_settings({"ONERUN_HA_LABEL_POD": "1"}).ha is None


@pytest.mark.parametrize(("change", "named"), [
    ({"POD_NAMESPACE": ""}, "POD_NAMESPACE"),
    ({"KUBERNETES_SERVICE_HOST": ""}, "KUBERNETES_SERVICE_HOST"),
    ({"POD_NAMESPACE": "cloud --pod other"}, "POD_NAMESPACE"),  # oned splits on blanks
    ({"POD_NAME": "One_1"}, "POD_NAME"),
    ({"KUBERNETES_SERVICE_PORT": "https"}, "KUBERNETES_SERVICE_PORT"),
])
def test_labelling_needs_a_pod_and_an_api_server(change: dict[str, str], named: str) -> None:
    found = problems({**ZONE, **IN_POD, **change})
    assert named in found["ONERUN_HA_LABEL_POD"] and "downward API" in found["ONERUN_HA_LABEL_POD"]


def test_labelling_refuses_hooks_of_onerun_config(tmp_path: Path) -> None:
    config = tmp_path / "onerun.yaml"
    config.write_text('oned: {RAFT_LEADER_HOOK: {COMMAND: raft/vip.sh, ARGUMENTS: "leader"}}\n')
    found = problems({**ZONE, **IN_POD, "ONERUN_CONFIG": str(config)})
    assert "remove RAFT_LEADER_HOOK" in found["ONERUN_CONFIG: oned.RAFT_LEADER_HOOK"]
    ha = load_settings({**ZONE, "ONERUN_CONFIG": str(config)}).ha  # without labelling: theirs
    assert ha is not None and ha.label_pod is None
