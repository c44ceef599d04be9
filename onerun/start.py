"""``onerun start``: observe, decide, then show the plan (--dry-run) or apply it and exec.

The dry run and the real start share every step up to ``apply``, so the plan shown is
the plan run and the exit code shown is the exit code the real start ends with
(a failure inside an action, such as a failed schema upgrade, excepted).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from onerun.config.render import render_configs
from onerun.fileerrors import failed_path, file_error
from onerun.ha.start import Formed, form_zone, zone_program
from onerun.layout import Layout
from onerun.log import Logger
from onerun.observe import observe
from onerun.plan import ApplyContext, Plan
from onerun.policy import Decision, decide
from onerun.runtime.services import plan_programs
from onerun.runtime.supervisor import exec_supervisord, supervisor_actions, supervisord_argv
from onerun.settings import Settings
from onerun.upgrade import UpgradeSchema


def build_plan(settings: Settings, layout: Layout, decision: Decision,
               zone: Formed | None = None) -> Plan:
    """The whole ordered plan: state decisions, configs, upgrade, supervisord. ``zone``:
    this member's place in an HA zone (onerun/ha/start.py), None without a zone."""
    zone_steps = [zone.check] if zone is not None and zone.check is not None else []
    if decision.refusal is not None:
        return Plan(actions=zone_steps + list(decision.actions), refusal=decision.refusal)
    plan = Plan(actions=zone_steps + list(decision.actions))
    plan.actions.extend(render_configs(settings, layout,
                                       zone.server_id if zone is not None else None))
    if decision.upgrade is not None:
        plan.add(UpgradeSchema(settings, layout, decision.upgrade.db_version,
                               decision.upgrade.target_version))
    programs = plan_programs(
        settings, layout,
        maintenance=settings.maintenance,
        heal_service_auth=decision.heal_service_auth,
        record_start=decision.record_start,
        record_key_fingerprint=decision.record_key_fingerprint,
    )
    if zone is not None:
        programs = sorted([*programs, zone_program(settings, layout)], key=lambda p: p.priority)
    plan.actions.extend(supervisor_actions(settings, layout, programs))
    plan.command = supervisord_argv(layout)
    return plan


def _format_step(index: int, step: dict[str, Any]) -> str:
    kind = step.get("action", "?")
    target = step.get("path") or step.get("name") or step.get("command") or ""
    details = [f"{key}={value}" for key, value in step.items()
               if key not in ("action", "path", "name", "command", "why", "reason", "fix")
               and value not in ("", None)]
    line = f"{index:3d}. {kind:<16} {target}"
    if details:
        line += "  [" + ", ".join(details) + "]"
    for key in ("why", "reason", "fix"):
        if step.get(key):
            line += f"\n       {key}: {step[key]}"
    return line


def print_plan(plan: Plan, layout: Layout, fmt: str) -> None:
    """The dry-run output: numbered steps for people, or one JSON object."""
    steps = plan.describe()
    if fmt == "json":
        print(json.dumps({"root": str(layout.root), "steps": steps,
                          "refused": plan.refusal is not None, "exit_code": plan.exit_code}))
        return
    print(f"onerun start plan (root {layout.root}):")
    for index, step in enumerate(steps, start=1):
        print(_format_step(index, step))
    verdict = "refuse" if plan.refusal else "proceed"
    print(f"decision: {verdict}; exit code {plan.exit_code}")


def prepare(settings: Settings, layout: Layout, log: Logger, zone: Formed | None = None, *,
            dry_run: bool = False) -> Plan:
    """Observe (waiting for the DB), decide, and assemble the plan. Changes nothing, except
    that a real start rolls back an sqlite transaction a crash interrupted, after keeping a
    copy of the files (onerun/database/sqlite.py)."""
    try:
        observation = observe(settings, layout, log.info, dry_run=dry_run)
    except OSError as error:
        if failed_path(error) is None:
            raise
        raise file_error(error, "reading the volume and the image to decide what to do",
                         layout) from error
    decision = decide(settings, observation, layout)
    return build_plan(settings, layout, decision, zone)


def run_start(settings: Settings, layout: Layout, log: Logger, *, dry_run: bool) -> int:
    """Dry run: print the plan and return its exit code. Otherwise apply and exec supervisord.

    In an HA zone the zone is formed first (onerun/ha/start.py): a dry run that finds a
    founding or joining step to take shows that step's plan instead. Maintenance mode starts
    no OpenNebula service, so it forms nothing (an operator may be about to restore).
    """
    zone = None
    if settings.ha is not None and not settings.maintenance:
        zone = form_zone(settings, layout, log, dry_run=dry_run)
        if zone.plan is not None:
            print_plan(zone.plan, layout, settings.log_format)
            sys.stdout.flush()
            return zone.plan.exit_code
    plan = prepare(settings, layout, log, zone, dry_run=dry_run)
    if dry_run:
        print_plan(plan, layout, settings.log_format)
        sys.stdout.flush()
        return plan.exit_code
    account = layout.oneadmin
    plan.apply(ApplyContext(layout, account.uid, account.gid, log.info))
    log.info("handing over to supervisord", command=" ".join(plan.command))
    exec_supervisord(layout, os.environ)
