"""The formation policy's table: this member's volume and its peers' answers -> the step.

Each row is a situation a real zone goes through (docs/ha.md, "Formation"); the expected
step names its kind and the one fact that matters (the server ID, the peer, the reason).
"""

from __future__ import annotations

import pytest

from onerun.database.classify import DbState
from onerun.ha.formation import (
    Found,
    Join,
    Local,
    Peer,
    Phase,
    Refuse,
    Report,
    Start,
    Step,
    Wait,
    next_step,
)
from onerun.ha.zone import CANDIDATE, FOLLOWER, LEADER, RaftStatus, ZoneServer

NAMES = ("one-0", "one-1", "one-2")
ADDRESS = {name: f"{name}.h:2640" for name in NAMES}
ENDPOINT = {name: f"http://{name}.h:2633/RPC2" for name in NAMES}


def server(name: str, server_id: int) -> ZoneServer:
    return ZoneServer(server_id, name, ENDPOINT[name])


def waiting(name: str, *, empty: bool = True, phase: Phase = Phase.WAITING) -> Peer:
    return Peer(ADDRESS[name], Report(name, phase, ENDPOINT[name], empty))


def member(name: str, state: int, zone: tuple[ZoneServer, ...], server_id: int = 0) -> Peer:
    raft = RaftStatus(server_id, state, 1, 5, 5)
    return Peer(ADDRESS[name], Report(name, Phase.MEMBER, ENDPOINT[name], False, raft, zone))


def silent(name: str) -> Peer:
    return Peer(ADDRESS[name], error="ConnectionRefusedError")


def refusing(name: str) -> Peer:
    return Peer(ADDRESS[name], refused_credentials=True, error="refused our credentials")


def local(name: str, db: DbState = DbState.EMPTY,
          servers: tuple[ZoneServer, ...] | None = None) -> Local:
    return Local(name, db, servers)


ZONE_0 = (server("one-0", 0),)
ZONE_01 = (server("one-0", 0), server("one-1", 1))
ZONE_012 = (*ZONE_01, server("one-2", 2))

CASES: list[tuple[str, Local, list[Peer], type, object]] = [
    # --- a cold start of three empty members
    ("first name founds when every member answers empty",
     local("one-0"), [waiting("one-1"), waiting("one-2")], Found, False),
    ("others wait for the first name",
     local("one-1"), [waiting("one-0"), waiting("one-2")], Wait, "one-0 founds"),
    ("an unreachable member is never taken for an empty one",
     local("one-0"), [waiting("one-1"), silent("one-2")], Wait, "no answer from one-2"),
    ("a member that holds data stops the founding",
     local("one-0"), [waiting("one-1", empty=False), waiting("one-2")], Wait, "one-1"),
    ("while one founds, the others wait",
     local("one-1"), [waiting("one-0", phase=Phase.FOUNDING), waiting("one-2")], Wait,
     "one-0 is founding"),
    ("an interrupted first bootstrap founds again",
     local("one-0", DbState.PARTIAL_USERS), [waiting("one-1"), waiting("one-2")], Found, False),
    # --- joining
    ("the next name joins through the leader",
     local("one-1"), [member("one-0", LEADER, ZONE_0), waiting("one-2")], Join, None),
    ("the later name waits for the earlier one",
     local("one-2"), [member("one-0", LEADER, ZONE_0), waiting("one-1")], Wait,
     "one-1 joins first"),
    ("a registered server that is not running yet holds the next join back",
     local("one-2"), [member("one-0", LEADER, ZONE_01), waiting("one-1", empty=False,
                                                                phase=Phase.JOINING)],
     Wait, "one-1 registered but not yet"),
    ("once the earlier member follows, the next one joins",
     local("one-2"), [member("one-0", LEADER, ZONE_01), member("one-1", FOLLOWER, ZONE_01, 1)],
     Join, None),
    ("a member the zone lists with an empty DB copies it again, same ID",
     local("one-1"), [member("one-0", LEADER, ZONE_012), member("one-2", FOLLOWER, ZONE_012, 2)],
     Join, 1),
    ("members without a leader: wait for the election",
     local("one-2"), [member("one-0", CANDIDATE, ZONE_01), member("one-1", CANDIDATE, ZONE_01)],
     Wait, "no leader"),
    ("members whose oned does not answer yet: wait",
     local("one-2"), [Peer(ADDRESS["one-0"], Report("one-0", Phase.MEMBER, ENDPOINT["one-0"],
                                                    False)), waiting("one-1")],
     Wait, "no leader"),
    # --- credentials
    ("a peer refusing our credentials refuses the start",
     local("one-1"), [refusing("one-0"), waiting("one-2")], Refuse, "ONEADMIN_PASSWORD"),
    # --- restarts: the server ID comes from the local DB, no peer needed
    ("a restart takes its ID from its own DB with every peer down",
     local("one-2", DbState.BOOTSTRAPPED, ZONE_012), [silent("one-0"), silent("one-1")],
     Start, 2),
    ("the ID is the zone's, not an ordinal",
     local("one-1", DbState.BOOTSTRAPPED, (server("one-0", 0), server("one-1", 3))),
     [silent("one-0"), silent("one-2")], Start, 3),
    ("the founder after its solo run starts as server 0",
     local("one-0", DbState.BOOTSTRAPPED, ZONE_0), [waiting("one-1"), waiting("one-2")],
     Start, 0),
    ("a solo DB never registered resumes founding",
     local("one-0", DbState.BOOTSTRAPPED, ()), [waiting("one-1"), waiting("one-2")], Found, True),
    ("a solo DB while a zone runs is refused",
     local("one-2", DbState.BOOTSTRAPPED, ()), [member("one-0", LEADER, ZONE_01), waiting("one-1")],
     Refuse, "never part of a zone"),
    ("a DB of a zone that no longer lists this member is refused",
     local("one-2", DbState.BOOTSTRAPPED, ZONE_01), [], Refuse, "does not list one-2"),
    ("a zone listing this member twice is refused",
     local("one-1", DbState.BOOTSTRAPPED, (server("one-1", 1), server("one-1", 3))), [], Refuse,
     "more than once"),
    ("a damaged DB is neither started nor replaced",
     local("one-1", DbState.PARTIAL_TABLES), [member("one-0", LEADER, ZONE_0)], Refuse,
     "partial-tables"),
    ("an unfinished bootstrap is not overwritten by a copy",
     local("one-1", DbState.PARTIAL_USERS), [member("one-0", LEADER, ZONE_0)], Refuse,
     "never overwrites"),
]


def detail(step: Step) -> object:
    if isinstance(step, Start):
        return step.server_id
    if isinstance(step, Found):
        return step.resume
    if isinstance(step, Join):
        return step.server_id
    if isinstance(step, Wait):
        return step.why
    return f"{step.reason} {step.fix}"


@pytest.mark.parametrize(("title", "me", "peers", "kind", "expected"), CASES,
                         ids=[case[0] for case in CASES])
def test_next_step(title: str, me: Local, peers: list[Peer], kind: type,
                   expected: object) -> None:
    step = next_step(me, peers)
    assert isinstance(step, kind), step
    found = detail(step)
    if isinstance(expected, str) and isinstance(found, str):
        assert expected in found, step
    else:
        assert found == expected, step


def test_a_join_goes_through_the_leader_and_copies_from_it() -> None:
    peers = [member("one-1", FOLLOWER, ZONE_01, 1), member("one-0", LEADER, ZONE_01)]
    step = next_step(local("one-2"), peers)
    assert isinstance(step, Join)
    assert (step.leader_endpoint, step.source) == (ENDPOINT["one-0"], ADDRESS["one-0"])


def test_exactly_one_member_founds_whatever_the_order_of_its_peers() -> None:
    founders = []
    for name in NAMES:
        others = [waiting(other) for other in reversed(NAMES) if other != name]
        if isinstance(next_step(local(name), others), Found):
            founders.append(name)
    assert founders == ["one-0"]
