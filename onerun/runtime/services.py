"""The front-end's services: their fixed names (the ONERUN_SERVICES contract) and the
catalogue of programs supervisord runs, in start order, with how each one is started.

Stdlib only at import time (settings imports SERVICE_NAMES). Start and stop order are
supervisord priorities: it starts in ascending and stops in descending priority, one
program after another, so services stop first and oned last (docs/processes.md).
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onerun.runtime.critical import CRITICAL_PROGRAMS, CRITICAL_SERVICES, POST_START_PROGRAM
from onerun.versions import Version, read_release

if TYPE_CHECKING:
    from onerun.layout import Layout
    from onerun.settings import Settings

# Fixed by the foundation issue; every later part (supervisord, probes, chart) uses them.
SERVICE_NAMES = (
    "oned",
    "hem",
    "fireedge",
    "guacd",
    "oneflow",
    "onegate",
    "oneform",
    "oneks",
    "ssh-agent",
)

# onerun's own programs under supervisord: the resident log follower and the one-shot
# that loads oneadmin's keys into ssh-agent. (Programs' output and critical failures
# are handled inside supervisord's process, onerun/runtime/pid1.py, by no program of their own.)
LOGS_PROGRAM = "onerun-logs"
SSH_ADD_PROGRAM = "onerun-ssh-add"
# POST_START_PROGRAM, the one-shot, is in onerun.runtime.critical (the probe reads it there).

# PATH of the packaged oned unit: the override directory holds the ssh wrapper.
OVERRIDE_DIR = "/usr/lib/one/sh/override"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The file whose presence means "installed" (under the root).
INSTALLED_BY = {
    "oned": "/usr/bin/oned",
    "hem": "/usr/lib/one/onehem/onehem-server.rb",
    "fireedge": "/usr/lib/one/fireedge/dist/index.js",
    "guacd": "/usr/share/one/guacd/sbin/guacd",
    "oneflow": "/usr/lib/one/oneflow/oneflow-server.rb",
    "onegate": "/usr/lib/one/onegate/onegate-server.rb",
    "oneform": "/usr/lib/one/oneform/oneform-server.rb",
    "oneks": "/usr/lib/one/oneks/oneks-server.rb",
    "ssh-agent": "/usr/bin/ssh-agent",
}

# Service auth file each service reads at start (its packaged unit asserts it is not empty).
AUTH_FILE_OF = {
    "fireedge": "sunstone_auth",
    "oneflow": "oneflow_auth",
    "onegate": "onegate_auth",
    "oneform": "oneform_auth",
    "oneks": "oneks_auth",
}

# Log files each service writes itself (reference 4.1); the follower prints them.
LOG_FILES_OF = {
    "oned": ("oned.log", "monitor.log"),
    "hem": ("onehem.log",),
    "fireedge": ("fireedge.log",),
    "oneflow": ("oneflow.log",),
    "onegate": ("onegate.log",),
    "oneform": ("oneform.log",),
    "oneks": ("oneks.log",),
}

# Priorities: start ascending, stop descending (one after another).
PRIORITY = {
    LOGS_PROGRAM: 1,
    "ssh-agent": 10,
    SSH_ADD_PROGRAM: 11,
    "oned": 20,
    "hem": 30,
    "guacd": 40,
    "fireedge": 41,
    "oneflow": 42,
    "onegate": 43,
    "oneform": 44,
    "oneks": 45,
    POST_START_PROGRAM: 90,
}

# Seconds supervisord waits after SIGTERM before SIGKILL. oned needs ~6 s (reference 8);
# a SIGKILLed oned leaves its lock and may interrupt a DB write, so it gets 30.
# The Ruby/Node servers are stateless and exit at once on SIGTERM.
STOPWAIT_ONED = 30
STOPWAIT_SERVICE = 3
STOPWAIT_HELPER = 2
STOPWAIT_LOGS = 3  # the follower prints what oned wrote while stopping, then exits


@dataclass(frozen=True)
class Program:
    """One supervisord program, everything the config needs and nothing secret.

    ``command`` is the argv as supervisord runs it (already wrapped in ``onerun
    wait-oned`` where the program needs oned). Its stdout and stderr reach the
    container's stdout prefixed with ``name`` (onerun/runtime/pid1.py); ``log_files`` are the
    files it writes itself, which the follower prints. Every program runs as oneadmin.
    """

    name: str
    command: list[str]
    priority: int
    autostart: bool = True
    autorestart: bool = True
    startsecs: int = 3
    startretries: int = 5
    stopwaitsecs: int = STOPWAIT_SERVICE
    environment: dict[str, str] = field(default_factory=dict)
    log_files: tuple[Path, ...] = ()

    @property
    def critical(self) -> bool:
        """Its FATAL or unexpected exit ends the pod (onerun.runtime.critical, the one list)."""
        return self.name in CRITICAL_PROGRAMS


def onerun_argv() -> list[str]:
    """How supervisord's programs call onerun back: this interpreter, as a module."""
    return [sys.executable, "-m", "onerun"]


def installed(layout: Layout, name: str) -> bool:
    """Whether the image carries ``name`` (its binary or server script exists)."""
    return layout.binary(INSTALLED_BY[name]).exists()


def service_auth_files_for(release: Version | None,
                           installed_services: Collection[str]) -> tuple[str, ...]:
    """The service auth files a release's oned writes (reference 1.3).

    From the release where known (7.0: sunstone/onegate/oneflow, 7.2+ adds oneform, 7.4+
    adds oneks); otherwise from which of OneForm and OneKS are installed.
    """
    names = ["sunstone_auth", "onegate_auth", "oneflow_auth"]
    if release is not None:
        if release >= Version.parse("7.2"):
            names.append("oneform_auth")
        if release >= Version.parse("7.4"):
            names.append("oneks_auth")
        return tuple(names)
    names.extend(AUTH_FILE_OF[service] for service in ("oneform", "oneks")
                 if service in installed_services)
    return tuple(names)


def installed_services(layout: Layout) -> frozenset[str]:
    """Every service the image carries."""
    return frozenset(name for name in SERVICE_NAMES if installed(layout, name))


def service_auth_files(layout: Layout) -> tuple[str, ...]:
    """The service auth files of the image under ``layout``."""
    release = read_release(layout.release_files())
    return service_auth_files_for(release, installed_services(layout))


def _base_environment(layout: Layout) -> dict[str, str]:
    """supervisord's ``user=`` does not set these (tooling.md); ONE_AUTH avoids getpwuid."""
    account = layout.oneadmin
    return {
        "HOME": str(layout.var_lib_one),
        "USER": account.name,
        "LOGNAME": account.name,
        "ONE_AUTH": str(layout.one_auth),
    }


def _helper_environment(settings: Settings, layout: Layout) -> dict[str, str]:
    """onerun helpers find the same root and log format as the start that planned them."""
    return {**_base_environment(layout), "ONERUN_ROOT": str(layout.root),
            "ONERUN_LOG_FORMAT": settings.log_format}


def _wait_oned(layout: Layout, name: str, command: list[str]) -> list[str]:
    """Start ``command`` once oned answers and the service's auth file is there."""
    argv = [*onerun_argv(), "wait-oned"]
    if name in AUTH_FILE_OF:
        argv += ["--file", str(layout.service_auth(AUTH_FILE_OF[name]))]
    return [*argv, "--", *command]


def _service_command(layout: Layout, name: str) -> list[str]:
    """The packaged units' ExecStart, with absolute paths under the root."""
    ruby = str(layout.binary("/usr/bin/ruby"))
    script = str(layout.binary(INSTALLED_BY[name]))
    if name == "oned":
        return [script, "-f"]
    if name == "fireedge":
        return [str(layout.binary("/usr/bin/node")), script]
    if name == "guacd":
        # Loopback only (the package binds 0.0.0.0): guacd takes unauthenticated connect
        # instructions; FireEdge, in this container, reaches it at localhost:4822.
        return [script, "-f", "-b", "127.0.0.1", "-L", "info"]
    if name == "ssh-agent":
        # The agent itself, in the foreground, as supervisord's program: no process of
        # ours stays resident as its parent. Keys: the onerun-ssh-add one-shot.
        return [script, "-D", "-a", str(layout.ssh_agent_sock)]
    return [ruby, script]


def _service_program(settings: Settings, layout: Layout, name: str, agent: bool) -> Program:
    env = _base_environment(layout)
    if name in ("oned", "hem") and agent:
        env["SSH_AUTH_SOCK"] = str(layout.ssh_agent_sock)
    if name == "oned":
        env["PATH"] = f"{layout.path(OVERRIDE_DIR)}:{SYSTEM_PATH}"
    if name == "guacd":
        env["LD_LIBRARY_PATH"] = str(layout.path("/usr/share/one/guacd/lib"))
    needs_oned = name in ("hem", *AUTH_FILE_OF)
    command = _service_command(layout, name)
    if needs_oned:
        command = _wait_oned(layout, name, command)
        env.update(_helper_environment(settings, layout))
    critical = name in CRITICAL_SERVICES
    return Program(
        name=name,
        command=command,
        priority=PRIORITY[name],
        # A crashed oned leaves its lock (reference 1.4): restarting it in place fails, so
        # supervisord's hook (pid1.py) ends the pod and the next start cleans up.
        autorestart=not critical,
        startsecs=10 if name == "oned" else 3,
        startretries=0 if critical else 5,
        stopwaitsecs=STOPWAIT_ONED if name == "oned" else
        STOPWAIT_HELPER if name == "ssh-agent" else STOPWAIT_SERVICE,
        environment=env,
        log_files=tuple(layout.log_dir / f for f in LOG_FILES_OF.get(name, ())),
    )


def _post_start_program(settings: Settings, layout: Layout, heal_service_auth: bool,
                        record_start: tuple[str | None, str | None] | None,
                        record_key_fingerprint: bool) -> Program:
    argv = [*onerun_argv(), "post-start"]
    if heal_service_auth:
        argv.append("--heal-service-auth")
    if record_key_fingerprint:
        argv.append("--record-key-fingerprint")
    if record_start is not None:
        release, db_version = record_start
        argv += ["--record-start", release or "", db_version or ""]
    return Program(
        name=POST_START_PROGRAM, command=argv, priority=PRIORITY[POST_START_PROGRAM],
        autorestart=False, startsecs=0, startretries=0, stopwaitsecs=STOPWAIT_HELPER,
        environment=_helper_environment(settings, layout),
    )


def _ssh_add_program(settings: Settings, layout: Layout) -> Program:
    """Once the agent listens, load the keys (the packaged unit's ExecStartPost)."""
    return Program(
        name=SSH_ADD_PROGRAM, command=[*onerun_argv(), "ssh-add"],
        priority=PRIORITY[SSH_ADD_PROGRAM], autorestart=False, startsecs=0, startretries=0,
        stopwaitsecs=STOPWAIT_HELPER, environment=_helper_environment(settings, layout),
    )


def plan_programs(settings: Settings, layout: Layout, *, maintenance: bool,
                  heal_service_auth: bool,
                  record_start: tuple[str | None, str | None] | None,
                  record_key_fingerprint: bool = False) -> list[Program]:
    """Every program supervisord runs, in start order.

    OpenNebula services only when installed and enabled; none at all in maintenance
    mode (the container stays up for an operator with the follower alone).
    """
    services: list[str] = []
    if not maintenance:
        services = [n for n in SERVICE_NAMES
                    if settings.service_enabled(n) and installed(layout, n)]
    agent = "ssh-agent" in services
    programs = [_service_program(settings, layout, name, agent) for name in services]
    if agent:
        programs.append(_ssh_add_program(settings, layout))
    if "oned" in services:
        programs.append(_post_start_program(settings, layout, heal_service_auth, record_start,
                                            record_key_fingerprint))
    programs.append(Program(
        name=LOGS_PROGRAM, command=[*onerun_argv(), "logs", "--follow"],
        priority=PRIORITY[LOGS_PROGRAM], stopwaitsecs=STOPWAIT_LOGS,
        environment=_helper_environment(settings, layout),
    ))
    return sorted(programs, key=lambda p: p.priority)

