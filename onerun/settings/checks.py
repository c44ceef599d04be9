"""Rules across settings, run after every variable was read on its own.

Each looks at values the table already read (``Reading.values``) and adds a problem
against the variable an operator should change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from onerun.settings.declaration import Reading
from onerun.settings.model import ONED_DEFAULT_PORT, HaSettings, PodLabelling
from onerun.settings.overrides import get_key, has_key
from onerun.settings.rules import DIGITS

_HA_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")
_HA_ENDPOINT = re.compile(r"https?://[A-Za-z0-9._\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/\-]*)?")


def check_database(reading: Reading) -> None:
    """A MySQL backend needs a server and a password."""
    if reading.values["DB_BACKEND"] != "mysql":
        return
    if not reading.given("DB_HOST"):
        reading.problem("DB_HOST", "is required when DB_BACKEND=mysql",
                        "set it to the server's name")
    if not reading.given("DB_PASSWORD"):
        reading.problem("DB_PASSWORD", "is required when DB_BACKEND=mysql",
                        "set DB_PASSWORD(_FILE)")


def check_override_conflicts(reading: Reading) -> None:
    """An attribute set both by a variable and in ONERUN_CONFIG: which one wins is unclear."""
    overrides: Mapping[str, Any] = reading.values["ONERUN_CONFIG"]
    if reading.values["OPENNEBULA_HOSTNAME"] and has_key(overrides.get("oned", {}), "HOSTNAME"):
        reading.problem(
            "OPENNEBULA_HOSTNAME",
            "HOSTNAME is also set in ONERUN_CONFIG's oned section",
            "set it in one place only",
        )
    network = get_key(overrides.get("monitord", {}), "NETWORK")
    vectors = network if isinstance(network, list) else [network]
    if reading.values["OPENNEBULA_MONITOR_ADDRESS"] and any(
        isinstance(v, dict) and has_key(v, "MONITOR_ADDRESS") for v in vectors
    ):
        reading.problem(
            "OPENNEBULA_MONITOR_ADDRESS",
            "NETWORK/MONITOR_ADDRESS is also set in ONERUN_CONFIG's monitord section",
            "set it in one place only",
        )


def oned_port(overrides: Mapping[str, Any]) -> int:
    """oned.conf's PORT as rendered: ONERUN_CONFIG's oned.PORT, else the packaged default."""
    value = get_key(overrides.get("oned", {}), "PORT")
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    if isinstance(value, str) and DIGITS.fullmatch(value) and 1 <= int(value) <= 65535:
        return int(value)
    return ONED_DEFAULT_PORT


def zone(reading: Reading) -> HaSettings | None:
    """ONERUN_HA_*: unset ONERUN_HA_MEMBERS means no zone, and the rest is ignored."""
    values = reading.values
    members: tuple[str, ...] = values["ONERUN_HA_MEMBERS"]
    if not members:
        return None
    if values["DB_BACKEND"] != "sqlite":
        reading.problem("ONERUN_HA_MEMBERS", "an HA zone runs on sqlite only in this release "
                        "(one database per member on MariaDB is designed, not built: "
                        "docs/ha.md)",
                        "use DB_BACKEND=sqlite for an HA zone, or unset ONERUN_HA_MEMBERS")
    address: str | None = values["ONERUN_HA_ADDRESS"]
    if address is None or address not in members:
        reading.problem("ONERUN_HA_ADDRESS", f"{address!r} is not one of ONERUN_HA_MEMBERS",
                        "set it to this member's own entry of ONERUN_HA_MEMBERS")
        return None
    host = address.rpartition(":")[0]
    name: str = (values["ONERUN_HA_SERVER_NAME"] or values["POD_NAME"]
                 or host.partition(".")[0])
    if not _HA_SERVER_NAME.fullmatch(name):
        reading.problem("ONERUN_HA_SERVER_NAME", f"{name!r} is not a valid server name",
                        "use up to 128 of [A-Za-z0-9._-], e.g. the pod's name")
    overrides: Mapping[str, Any] = values["ONERUN_CONFIG"]
    port = oned_port(overrides)
    endpoint: str = values["ONERUN_HA_ENDPOINT"] or f"http://{host}:{port}/RPC2"
    if not _HA_ENDPOINT.fullmatch(endpoint):
        reading.problem("ONERUN_HA_ENDPOINT",
                        f"{endpoint!r} is not an http(s)://host:port/path URL",
                        "set the URL the other members reach this oned's XML-RPC API by, e.g. "
                        f"http://{host}:{port}/RPC2")
    election: int = values["ONERUN_HA_ELECTION_TIMEOUT_MS"]
    broadcast: int = values["ONERUN_HA_BROADCAST_TIMEOUT_MS"]
    if broadcast * 4 > election:
        reading.problem("ONERUN_HA_BROADCAST_TIMEOUT_MS", f"{broadcast} ms is more than a "
                        f"quarter of ONERUN_HA_ELECTION_TIMEOUT_MS ({election} ms): followers "
                        "would start elections between two heartbeats", "keep heartbeats at "
                        "most a quarter of the election timeout, e.g. 250 and 2000")
    raft = get_key(overrides.get("oned", {}), "RAFT")
    for variable, key in (("ONERUN_HA_ELECTION_TIMEOUT_MS", "ELECTION_TIMEOUT_MS"),
                          ("ONERUN_HA_BROADCAST_TIMEOUT_MS", "BROADCAST_TIMEOUT_MS")):
        if isinstance(raft, dict) and has_key(raft, key):
            reading.problem(variable, f"RAFT/{key} is also set in ONERUN_CONFIG's oned section",
                            f"set it in {variable} only")
    if has_key(overrides.get("oned", {}), "FEDERATION"):
        reading.problem("ONERUN_CONFIG: oned.FEDERATION", "onerun sets FEDERATION/SERVER_ID "
                        "from the zone when ONERUN_HA_MEMBERS is set",
                        "remove FEDERATION from ONERUN_CONFIG")
    for variable in ("ONEADMIN_PASSWORD", "ONE_KEY"):
        if values[variable] is None:
            reading.problem(variable, "is required when ONERUN_HA_MEMBERS is set: every member "
                            "must use the same one (docs/ha.md)", f"set {variable}(_FILE) "
                            "from the Secret every member mounts")
    label_pod = pod_labelling(reading) if values["ONERUN_HA_LABEL_POD"] else None
    return HaSettings(
        members=members, address=address, server_name=name, endpoint=endpoint,
        oned_port=port, election_timeout_ms=election, broadcast_timeout_ms=broadcast,
        wait_timeout=values["ONERUN_HA_WAIT_TIMEOUT"], label_pod=label_pod,
    )


# The values go into oned.conf's hook ARGUMENTS, which oned splits on blanks.
_KUBERNETES = {"KUBERNETES_SERVICE_HOST": re.compile(r"[A-Za-z0-9.:\-]+"),
               "KUBERNETES_SERVICE_PORT": re.compile(r"[0-9]{1,5}"),
               "POD_NAMESPACE": re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"),
               "POD_NAME": re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")}


def pod_labelling(reading: Reading) -> PodLabelling | None:
    """ONERUN_HA_LABEL_POD=1: the pod oned's Raft hooks label, and the API they reach."""
    overrides: Mapping[str, Any] = reading.values["ONERUN_CONFIG"]
    for hook in ("RAFT_LEADER_HOOK", "RAFT_FOLLOWER_HOOK"):
        if has_key(overrides.get("oned", {}), hook):
            reading.problem(f"ONERUN_CONFIG: oned.{hook}", "onerun sets the Raft hooks to "
                            "label the pod when ONERUN_HA_LABEL_POD=1", f"remove {hook} from "
                            "ONERUN_CONFIG, or set ONERUN_HA_LABEL_POD=0")
    given = {name: reading.values[name] for name in _KUBERNETES}
    wrong = [name for name, value in given.items()
             if value is None or not _KUBERNETES[name].fullmatch(value)]
    if wrong:
        reading.problem("ONERUN_HA_LABEL_POD", f"needs {', '.join(wrong)} to label this pod: "
                        "unset or malformed", "run in a Kubernetes pod with POD_NAME and "
                        "POD_NAMESPACE from the downward API (the chart sets them), or set "
                        "ONERUN_HA_LABEL_POD=0")
        return None
    host = given["KUBERNETES_SERVICE_HOST"]
    return PodLabelling(api=f"https://{f'[{host}]' if ':' in host else host}:"
                            f"{given['KUBERNETES_SERVICE_PORT']}",
                        namespace=given["POD_NAMESPACE"], pod=given["POD_NAME"])
