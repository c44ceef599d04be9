"""The zone formation ``onerun start`` runs before its ordinary plan, and ``zone-serve``.

In a zone (ONERUN_HA_MEMBERS set), start first answers one question: with which SERVER_ID
does this member's oned start? ``form_zone`` loops: look at this member's DB and ask every
peer's zone service; ``formation.next_step`` decides; a founding or joining step is applied
as a plan of its own; then look again. It ends when the step is "start as server N" (the
ordinary plan follows, rendered with that SERVER_ID), or with a refusal (exit 3), or when
the zone did not become ready within ONERUN_HA_WAIT_TIMEOUT (exit 4). While it loops, a
responder answers the peers' questions about this member. ``--dry-run`` looks once and shows
the step it would take.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from onerun.catalogue import SERVICE_AUTH_FILES
from onerun.database.classify import DbState
from onerun.database.sqlite import classify_sqlite
from onerun.errors import DependencyUnavailable, UnsafeStateError
from onerun.ha.actions import FoundZone, JoinZone, local_endpoint
from onerun.ha.formation import Found, Join, Local, Peer, Phase, Refuse, Report, Start, Wait
from onerun.ha.formation import next_step as decide_step
from onerun.ha.wire import Responder, ServiceState, ZoneHTTPServer, ask, write_sqlite_snapshot
from onerun.ha.zone import ZoneClient, local_servers
from onerun.layout import Layout
from onerun.log import Logger
from onerun.plan import ApplyContext, Check, EnsureDirectory, Plan, Refusal
from onerun.runtime.oneapi import OneApiError, read_session
from onerun.runtime.services import Program, onerun_argv
from onerun.settings import HaSettings, Settings

POLL_SECONDS = 2.0
ZONE_PROGRAM = "onerun-zone"
ZONE_PRIORITY = 25  # after oned (20): it reports oned's Raft status


@dataclass(frozen=True)
class Formed:
    """The outcome: this member's server ID, or (dry run) the plan of the pending step."""

    server_id: int | None = None
    check: Check | None = None  # the decision, shown first in the ordinary plan
    plan: Plan | None = None


def _ha(settings: Settings) -> HaSettings:
    assert settings.ha is not None
    return settings.ha


def local_view(settings: Settings, layout: Layout) -> Local:
    """This member's DB (read-only) and the zone's servers it lists."""
    db = classify_sqlite(layout.sqlite_db)
    servers = local_servers(layout.sqlite_db) if db.state is DbState.BOOTSTRAPPED else None
    return Local(_ha(settings).server_name, db.state, servers)


def ask_peers(settings: Settings) -> list[Peer]:
    ha = _ha(settings)
    assert settings.oneadmin_password is not None
    password = settings.oneadmin_password.reveal()
    with ThreadPoolExecutor(max_workers=len(ha.peers)) as pool:
        return list(pool.map(lambda address: ask(address, password), ha.peers))


def _listen(settings: Settings) -> tuple[str, int]:
    return settings.listen_address, _ha(settings).listen_port


def _phase_of(step: object) -> Phase:
    return Phase.FOUNDING if isinstance(step, Found) else (
        Phase.JOINING if isinstance(step, Join) else Phase.WAITING)


def step_plan(settings: Settings, layout: Layout, step: Found | Join, log: Logger) -> Plan:
    """The plan of one formation step: founding is the ordinary preparation of a bootstrap
    without supervisord, then FoundZone; joining needs only the directories."""
    if isinstance(step, Join):
        return Plan(actions=[
            EnsureDirectory(layout.var_lib_one, None, why="oneadmin's home and the volume"),
            EnsureDirectory(layout.dot_one, 0o700, why="the service auth files of the zone"),
            EnsureDirectory(layout.state_dir, 0o700, why="the copy, before it is installed"),
            JoinZone(settings, layout, step.leader_endpoint, step.source, step.server_id),
        ])
    from onerun.config.render import render_configs
    from onerun.observe import observe
    from onerun.policy import decide
    from onerun.upgrade import UpgradeSchema

    decision = decide(settings, observe(settings, layout, log.info), layout)
    if decision.refusal is not None:
        return Plan(actions=list(decision.actions), refusal=decision.refusal)
    plan = Plan(actions=list(decision.actions))
    plan.actions.extend(render_configs(settings, layout, server_id=None))
    if decision.upgrade is not None:
        plan.add(UpgradeSchema(settings, layout, decision.upgrade.db_version,
                               decision.upgrade.target_version))
    plan.add(EnsureDirectory(layout.log_dir, 0o755, why="oned's log"))
    plan.add(FoundZone(settings, layout))
    return plan


def _then(step: Found | Join) -> Check:
    what = "founded" if isinstance(step, Found) else "joined"
    return Check("zone", "note", f"once {what}, onerun looks again and starts oned with the "
                                 "SERVER_ID the zone assigned (the ordinary plan)")


def _unfinished(step: Refuse | Wait) -> Formed:
    """A dry run's answer for a step that does not lead to a plan of its own."""
    if isinstance(step, Refuse):
        return Formed(plan=Plan(refusal=Refusal(step.reason, step.fix)))
    return Formed(plan=Plan(actions=[Check("zone", "note", f"would wait: {step.why}")]))


def _responder(settings: Settings, layout: Layout, report: Callable[[], Report],
               log: Logger) -> Responder:
    """Answer the peers while the zone forms (they decide on what this member says)."""
    assert settings.oneadmin_password is not None
    secret = settings.oneadmin_password.reveal()
    try:
        return Responder(_listen(settings), ServiceState(lambda: secret, report, log=log.info),
                         layout.var_lib_one)
    except OSError as exc:
        raise UnsafeStateError(
            f"the zone service cannot listen on {settings.listen_address}:"
            f"{_ha(settings).listen_port} ({exc.strerror or exc})",
            "give ONERUN_HA_ADDRESS a port nothing else in the pod uses") from exc


def form_zone(settings: Settings, layout: Layout, log: Logger, *, dry_run: bool,
              sleep: Callable[[float], None] = time.sleep) -> Formed:
    """Loop until this member knows its server ID (see the module docstring)."""
    ha = _ha(settings)
    phase = Phase.WAITING
    empty = True

    def report() -> Report:
        return Report(ha.server_name, phase, ha.endpoint, empty)

    responder = None if dry_run else _responder(settings, layout, report, log)
    deadline = time.monotonic() + ha.wait_timeout
    last = ""
    try:
        while True:
            local = local_view(settings, layout)
            empty = local.db in (DbState.EMPTY, DbState.PARTIAL_USERS)
            step = decide_step(local, ask_peers(settings))
            phase = _phase_of(step)
            if isinstance(step, Start):
                return Formed(server_id=step.server_id, check=Check("zone", "ok", step.why))
            if dry_run and isinstance(step, Refuse | Wait):
                return _unfinished(step)
            if isinstance(step, Refuse):
                raise UnsafeStateError(step.reason, step.fix)
            if isinstance(step, Wait):
                if step.why != last:
                    log.info(f"zone: waiting: {step.why}")
                    last = step.why
                if time.monotonic() > deadline:
                    raise DependencyUnavailable(
                        f"the zone was not ready within ONERUN_HA_WAIT_TIMEOUT "
                        f"({ha.wait_timeout:g} s): {step.why}")
                sleep(POLL_SECONDS)
                continue
            plan = step_plan(settings, layout, step, log)
            plan.actions.insert(0, Check("zone", "ok", step.why))
            if dry_run:
                if plan.refusal is None:
                    plan.add(_then(step))
                return Formed(plan=plan)
            log.info(f"zone: {step.why}")
            plan.apply(ApplyContext(layout, layout.oneadmin.uid, layout.oneadmin.gid, log.info))
            last = ""
    finally:
        if responder is not None:
            responder.close()


# --- the member's zone service under supervisord ---------------------------------------------

def zone_program(settings: Settings, layout: Layout) -> Program:
    """The onerun-zone program: answers peers' reports and serves copies of the DB."""
    ha = _ha(settings)
    host, port = _listen(settings)
    account = layout.oneadmin
    return Program(
        name=ZONE_PROGRAM,
        command=[*onerun_argv(), "zone-serve", "--listen", f"{host}:{port}",
                 "--name", ha.server_name, "--endpoint", ha.endpoint,
                 "--oned", local_endpoint(settings)],
        priority=ZONE_PRIORITY,
        environment={"HOME": str(layout.var_lib_one), "USER": account.name,
                     "LOGNAME": account.name, "ONE_AUTH": str(layout.one_auth),
                     "ONERUN_ROOT": str(layout.root), "ONERUN_LOG_FORMAT": settings.log_format},
    )


def member_report(name: str, endpoint: str, oned: str, layout: Layout) -> Report:
    """This member as its oned sees it; no Raft status while oned does not answer."""
    try:
        client = ZoneClient(oned, read_session(layout.one_auth), 2.0)
        raft, servers = client.raft(), client.servers()
    except (OSError, OneApiError, ValueError):
        return Report(name, Phase.MEMBER, endpoint, False)
    return Report(name, Phase.MEMBER, endpoint, False, raft, servers)


def _password(layout: Layout) -> str:
    return read_session(layout.one_auth).partition(":")[2]


def serve_zone(layout: Layout, log: Logger, *, listen: str, name: str, endpoint: str,
               oned: str) -> None:
    """Answer the other members of the zone on ``listen`` (HOST:PORT) until stopped."""
    host, _, port = listen.rpartition(":")
    files = {n: layout.service_auth(n) for n in SERVICE_AUTH_FILES}
    state = ServiceState(
        password=lambda: _password(layout),
        report=lambda: member_report(name, endpoint, oned, layout),
        snapshot=lambda target: write_sqlite_snapshot(layout.sqlite_db, files, target),
        log=log.info)
    server = ZoneHTTPServer((host.strip("[]"), int(port)), state, layout.state_dir)
    log.info(f"zone service of {name} listening on {listen}")
    server.serve_forever()
