"""The formation policy: a pure function from this member's view and its peers' answers to
the next step. No I/O; tests/unit/test_ha_formation.py is its table.

The rules come from what a real oned 7.0 zone did (docs/ha.md, "Failure modes"):
- a follower cannot start on an empty DB and must not bootstrap its own: it joins with a
  copy of the zone's DB, after the zone registered it;
- a server must be registered before it starts in HA mode, or it can win an election the
  others cannot follow;
- a zone is founded once: by the member whose name sorts first, and only when every member
  answers that it holds no data (an unreachable member is never taken for an empty one);
- servers join one at a time: each registration without its server running costs the zone
  its majority until that server starts.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from onerun.database.classify import DbState
from onerun.ha.zone import FOLLOWER, LEADER, RaftStatus, ZoneServer, named


class Phase(enum.Enum):
    """Where a member is, as its zone service reports it."""

    WAITING = "waiting"  # onerun start is waiting to know its step
    FOUNDING = "founding"  # bootstrapping solo and registering itself
    JOINING = "joining"  # registering through the zone, copying its DB
    MEMBER = "member"  # oned runs in HA mode (the zone-serve program answers)


@dataclass(frozen=True)
class Report:
    """What a member's zone service answers about itself."""

    name: str
    phase: Phase
    endpoint: str
    db_empty: bool
    raft: RaftStatus | None = None  # members only; None while its oned does not answer
    servers: tuple[ZoneServer, ...] = ()  # members only: the zone's servers as it sees them


@dataclass(frozen=True)
class Peer:
    """Another member as this one reached it."""

    address: str
    report: Report | None = None
    error: str | None = None  # why there is no report (unreachable, bad answer)
    refused_credentials: bool = False  # it answered 401: our ONEADMIN_PASSWORD is not its


@dataclass(frozen=True)
class Local:
    """This member: its name and what its own volume holds."""

    name: str
    db: DbState
    servers: tuple[ZoneServer, ...] | None  # the zone's servers in the local DB, if any


@dataclass(frozen=True)
class Start:
    """Start oned in HA mode with this server ID (read from the zone, never an ordinal)."""

    server_id: int
    why: str


@dataclass(frozen=True)
class Found:
    """Bootstrap solo (or reuse a solo DB: ``resume``), register this member, then start."""

    why: str
    resume: bool = False


@dataclass(frozen=True)
class Join:
    """Register through the zone (``server_id`` None) and copy the DB from ``source``."""

    leader_endpoint: str
    source: str  # the zone-service address of the member the DB is copied from
    server_id: int | None
    why: str


@dataclass(frozen=True)
class Wait:
    why: str


@dataclass(frozen=True)
class Refuse:
    reason: str
    fix: str


Step = Start | Found | Join | Wait | Refuse

_KEEP_DATA = ("move this member's one.db away (keep it until the zone is healthy) so it "
              "joins with a fresh copy of the zone's")


def next_step(local: Local, peers: Sequence[Peer]) -> Step:
    """The one next step for ``local``; see the module docstring for the rules."""
    if local.db is DbState.BOOTSTRAPPED:
        return _with_database(local, peers)
    if local.db not in (DbState.EMPTY, DbState.PARTIAL_USERS):
        return Refuse(f"this member's database is {local.db.value}: it can neither start "
                      "nor be replaced by a copy of the zone's", _KEEP_DATA)
    refused = _refused(peers)
    if refused is not None:
        return refused
    leader = _leader(peers)
    if leader is not None:
        if local.db is DbState.PARTIAL_USERS:
            return Refuse("this member's database holds an unfinished bootstrap while a zone "
                          "runs: a copy never overwrites a database", _KEEP_DATA)
        return _join(local, peers, leader)
    if any(p.report is not None and p.report.phase is Phase.MEMBER for p in peers):
        return Wait("the zone has no leader at the moment (an election is under way)")
    return _found_or_wait(local, peers, resume=False)


def _with_database(local: Local, peers: Sequence[Peer]) -> Step:
    servers = local.servers or ()
    mine = named(servers, local.name)
    if len(mine) == 1:
        return Start(mine[0].id, f"the zone in this member's database lists {local.name} as "
                                 f"server {mine[0].id}")
    if len(mine) > 1:
        ids = ", ".join(str(s.id) for s in mine)
        return Refuse(f"the zone lists {local.name} more than once (servers {ids})",
                      "remove the extra ones with `onezone server-del 0 <id>`, keeping one")
    if servers:
        names = ", ".join(s.name for s in servers)
        return Refuse(f"this member's database belongs to a zone of {names}, which does not "
                      f"list {local.name} (it was removed from the zone)",
                      f"{_KEEP_DATA}, or set ONERUN_HA_SERVER_NAME to its name in the zone")
    # A solo database, never registered: the founder stopped before registering itself.
    refused = _refused(peers)
    if refused is not None:
        return refused
    members = [p.report.name for p in peers if p.report and p.report.phase is Phase.MEMBER]
    if members:
        return Refuse(f"this member holds a database of its own, never part of a zone, while "
                      f"{', '.join(members)} run one", _KEEP_DATA)
    return _found_or_wait(local, peers, resume=True)


def _refused(peers: Sequence[Peer]) -> Refuse | None:
    refusing = [p.address for p in peers if p.refused_credentials]
    if not refusing:
        return None
    return Refuse(f"{', '.join(refusing)} refused this member's credentials: its "
                  "ONEADMIN_PASSWORD is not the zone's (one member with another password "
                  "stalls every election: docs/ha.md)",
                  "give every member the same ONEADMIN_PASSWORD (one Secret), then restart "
                  "this one")


def _leader(peers: Sequence[Peer]) -> Peer | None:
    for peer in peers:
        report = peer.report
        if (report is not None and report.phase is Phase.MEMBER and report.raft is not None
                and report.raft.state == LEADER):
            return peer
    return None


def _join(local: Local, peers: Sequence[Peer], leader: Peer) -> Step:
    assert leader.report is not None
    zone = leader.report.servers
    mine = named(zone, local.name)
    if len(mine) > 1:
        ids = ", ".join(str(s.id) for s in mine)
        return Refuse(f"the zone lists {local.name} more than once (servers {ids})",
                      "remove the extra ones with `onezone server-del 0 <id>`, keeping one")
    if mine:
        return Join(leader.report.endpoint, leader.address, mine[0].id,
                    f"the zone lists {local.name} as server {mine[0].id} but this member's "
                    "database is empty: copy the zone's")
    healthy = {p.report.name for p in peers
               if p.report is not None and p.report.phase is Phase.MEMBER
               and p.report.raft is not None and p.report.raft.state in (FOLLOWER, LEADER)}
    starting = sorted(s.name for s in zone if s.name not in healthy)
    if starting:
        return Wait(f"{', '.join(starting)} registered but not yet follower or leader: one "
                    "server joins at a time (an added server that does not run yet costs the "
                    "zone its majority)")
    before = sorted(p.report.name for p in peers
                    if p.report is not None and p.report.db_empty
                    and p.report.phase in (Phase.WAITING, Phase.JOINING)
                    and p.report.name < local.name)
    if before:
        return Wait(f"{before[0]} joins first (members join in name order)")
    return Join(leader.report.endpoint, leader.address, None,
                f"{leader.report.name} leads a zone of "
                f"{', '.join(s.name for s in zone)}: register {local.name} and copy its DB")


def _found_or_wait(local: Local, peers: Sequence[Peer], *, resume: bool) -> Step:
    silent = [f"{p.address} ({p.error or 'no answer'})" for p in peers if p.report is None]
    if silent:
        return Wait(f"no answer from {', '.join(silent)}: a zone is founded only when every "
                    "member answers that it holds no data")
    reports = [p.report for p in peers if p.report is not None]
    founding = [r.name for r in reports if r.phase is Phase.FOUNDING]
    if founding:
        return Wait(f"{founding[0]} is founding the zone")
    holding = [r.name for r in reports if not r.db_empty]
    if holding:
        return Wait(f"{', '.join(holding)} hold(s) a database but no zone runs: waiting for "
                    "them to start or be cleared")
    first = min([local.name, *(r.name for r in reports)])
    if first != local.name:
        return Wait(f"{first} founds the zone (the first name in order)")
    if resume:
        return Found("this member bootstrapped solo before and never registered itself; "
                     "every other member holds no data", resume=True)
    return Found("every member answers that it holds no data and this member's name comes "
                 "first: bootstrap solo, register, restart in HA mode")
