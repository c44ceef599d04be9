"""oned.conf in a zone: FEDERATION/SERVER_ID from the zone, the Raft timers from settings,
the rest of RAFT still the operator's (ONERUN_CONFIG); nothing changes without a zone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from testlib import UPSTREAM_VERSIONS

from onerun.config import oneconf, render
from onerun.layout import Layout
from onerun.plan import WriteFile
from onerun.settings import load_settings

ZONE = {"ONERUN_HA_MEMBERS": "a:2640,b:2640,c:2640", "ONERUN_HA_ADDRESS": "b:2640",
        "ONEADMIN_PASSWORD": "pw", "ONE_KEY": "0123456789abcdef0123456789abcdef",
        "ONERUN_HA_ELECTION_TIMEOUT_MS": "3000", "ONERUN_HA_BROADCAST_TIMEOUT_MS": "300"}


def rendered_oned(root: Path, env: dict[str, str], server_id: int | None) -> oneconf.Document:
    settings = load_settings(env, root=root)
    actions = render.render_configs(settings, Layout(root), server_id)
    [oned] = [a for a in actions if isinstance(a, WriteFile) and a.path.name == "oned.conf"]
    return oneconf.parse(oned.content.decode())


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_a_member_gets_its_server_id_and_the_timers(
        make_root: Callable[..., Path], tmp_path: Path, version: str) -> None:
    root = make_root(version)
    config = tmp_path / "onerun.yaml"
    config.write_text("oned: {RAFT: {LOG_RETENTION: 5000}}\n")
    document = rendered_oned(root, {**ZONE, "ONERUN_CONFIG": str(config)}, 3)
    federation = document.get("FEDERATION")
    raft = document.get("RAFT")
    assert isinstance(federation, dict) and isinstance(raft, dict)
    assert (federation["MODE"], federation["ZONE_ID"], federation["SERVER_ID"]) == (
        "STANDALONE", "0", "3")
    assert (raft["ELECTION_TIMEOUT_MS"], raft["BROADCAST_TIMEOUT_MS"]) == ("3000", "300")
    assert raft["LOG_RETENTION"] == "5000" and raft["XMLRPC_TIMEOUT_MS"] == "1000"


def test_before_registration_a_member_is_solo(make_root: Callable[..., Path]) -> None:
    federation = rendered_oned(make_root("7.4.0"), ZONE, None).get("FEDERATION")
    assert isinstance(federation, dict) and federation["SERVER_ID"] == "-1"


def test_without_a_zone_federation_and_raft_stay_as_packaged(
        make_root: Callable[..., Path]) -> None:
    root = make_root("7.4.0")
    packaged = oneconf.parse((root / "usr/share/one/etc-dist/oned.conf").read_text())
    document = rendered_oned(root, {}, None)
    for name in ("FEDERATION", "RAFT"):
        assert document.get(name) == packaged.get(name)
