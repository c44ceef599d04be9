"""The zone as oned describes it: its servers and Raft status, and oned's zone API.

XML shapes (src/zone/Zone.cc, src/raft/RaftManager.cc@7.4): one.zone.info gives
``<ZONE>...<SERVER_POOL><SERVER><ID/><NAME/><ENDPOINT/></SERVER>...</SERVER_POOL></ZONE>``
(also the body of the zone_pool row), one.zone.raftstatus gives
``<RAFT><SERVER_ID/><STATE/><TERM/><VOTEDFOR/><COMMIT/><LOG_INDEX/>...</RAFT>``.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onerun.runtime.oneapi import OneApiError, OneClient

ZONE_ID = 0  # Raft HA runs in the zone of a standalone oned (FEDERATION/ZONE_ID 0)

# RaftManager::State (include/RaftManager.h@7.4)
SOLO, CANDIDATE, FOLLOWER, LEADER = 0, 1, 2, 3
STATE_NAMES = {SOLO: "solo", CANDIDATE: "candidate", FOLLOWER: "follower", LEADER: "leader"}


@dataclass(frozen=True)
class ZoneServer:
    """One entry of the zone's SERVER_POOL."""

    id: int
    name: str
    endpoint: str


@dataclass(frozen=True)
class RaftStatus:
    server_id: int
    state: int
    term: int
    commit: int
    log_index: int

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))


def parse_servers(zone_xml: str) -> tuple[ZoneServer, ...]:
    """The SERVER_POOL of a ZONE document; ValueError when it is not one."""
    try:
        root = ET.fromstring(zone_xml)  # noqa: S314 - oned's own answer or its own DB row
    except ET.ParseError as exc:
        raise ValueError(f"malformed zone XML ({exc})") from None
    servers = []
    for server in root.iterfind("SERVER_POOL/SERVER"):
        try:
            servers.append(ZoneServer(int(server.findtext("ID", "")),
                                      server.findtext("NAME", ""),
                                      server.findtext("ENDPOINT", "")))
        except ValueError:
            raise ValueError("a zone server without a numeric ID") from None
    return tuple(servers)


def parse_raft(raft_xml: str) -> RaftStatus:
    try:
        root = ET.fromstring(raft_xml)  # noqa: S314 - oned's own answer
        values = {key: int(root.findtext(key, "")) for key in
                  ("SERVER_ID", "STATE", "TERM", "COMMIT", "LOG_INDEX")}
    except (ET.ParseError, ValueError) as exc:
        raise ValueError(f"malformed raftstatus XML ({exc})") from None
    return RaftStatus(values["SERVER_ID"], values["STATE"], values["TERM"], values["COMMIT"],
                      values["LOG_INDEX"])


def named(servers: tuple[ZoneServer, ...], name: str) -> list[ZoneServer]:
    return [server for server in servers if server.name == name]


def server_template(name: str, endpoint: str) -> str:
    """one.zone.addserver's template, as ``onezone server-add`` writes it (src/cli/onezone).
    Both values passed settings' rules: no quote or backslash can occur."""
    return f'SERVER = [ NAME = "{name}", ENDPOINT = "{endpoint}" ]'


class ZoneClient:
    """oned's zone methods. Writes sent to a follower are forwarded to the leader by oned."""

    def __init__(self, endpoint: str, session: str, timeout: float) -> None:
        self.endpoint = endpoint
        self._client = OneClient(endpoint, session, timeout)

    def call(self, method: str, *args: Any) -> Any:
        return self._client.call(method, *args)

    def raft(self) -> RaftStatus:
        return parse_raft(str(self.call("one.zone.raftstatus")))

    def servers(self) -> tuple[ZoneServer, ...]:
        return parse_servers(str(self.call("one.zone.info", ZONE_ID)))

    def add_server(self, name: str, endpoint: str) -> int:
        """Register ``name`` unless the zone lists it already; its ID as the zone assigned it
        (max + 1, not an ordinal: src/zone/ZoneServers.cc in OpenNebula/one), read back."""
        if not named(self.servers(), name):
            self.call("one.zone.addserver", ZONE_ID, server_template(name, endpoint))
        found = named(self.servers(), name)
        if len(found) != 1:
            raise OneApiError(f"the zone lists {len(found)} servers named {name} after "
                              "one.zone.addserver")
        return found[0].id


def local_servers(db: Path) -> tuple[ZoneServer, ...] | None:
    """The zone's servers as this member's own sqlite DB holds them (read-only); None when
    the file or the zone row is absent. A restart needs no peer to know its server ID."""
    if not db.is_file():
        return None
    uri = db.resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as connection:
            row = connection.execute("SELECT body FROM zone_pool WHERE oid = ?",
                                     (ZONE_ID,)).fetchone()
    except sqlite3.Error:
        return None
    if row is None or row[0] is None:
        return None
    return parse_servers(str(row[0]))
