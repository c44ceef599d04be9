"""The programs supervisord runs, built from the catalogue's rows (onerun/catalogue.py):
which services an image carries, their commands and environments, in start order.

Start and stop order are supervisord priorities: it starts in ascending and stops in
descending priority, one program after another, so services stop first and oned last
(docs/processes.md).
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onerun.catalogue import (
    INSTALLED_BY,
    ONERUN_LOGS,
    ONERUN_POST_START,
    ONERUN_SSH_ADD,
    SERVICE,
    SERVICE_AUTH_FILES,
    SERVICE_NAMES,
    SERVICES,
    ServiceSpec,
)
from onerun.runtime.critical import CRITICAL_PROGRAMS
from onerun.versions import Version, read_release

if TYPE_CHECKING:
    from onerun.layout import Layout
    from onerun.settings import Settings

# The rest of the packaged oned unit's PATH, after the row's path_first
# (share/pkgs/services/systemd/opennebula.service in OpenNebula/one).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    stopwaitsecs: int = 3
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
    """The service auth files a release's oned writes, in the order it writes them.

    oned writes the file of every service the release ships (the row's ``since``). Where
    the release is unknown, the file of a service newer than 7.0 is expected when the
    service is installed.
    """
    def written(spec: ServiceSpec) -> bool:
        if spec.since is None:
            return True
        if release is not None:
            return release >= Version.parse(spec.since)
        return spec.name in installed_services

    owner = {spec.auth_file: spec for spec in SERVICES if spec.auth_file is not None}
    return tuple(name for name in SERVICE_AUTH_FILES if written(owner[name]))


def installed_services(layout: Layout) -> frozenset[str]:
    """Every service the image carries."""
    return frozenset(name for name in SERVICE_NAMES if installed(layout, name))


def service_auth_files(layout: Layout) -> tuple[str, ...]:
    """The service auth files of the image under ``layout``."""
    release = read_release(layout.release_files())
    return service_auth_files_for(release, installed_services(layout))


def _base_environment(layout: Layout) -> dict[str, str]:
    """supervisord's ``user=`` changes the uid and gid only (supervisor/options.py,
    drop_privileges) and a child gets supervisord's own environment (supervisor/process.py),
    so these are set here; ONE_AUTH spares OpenNebula's clients a getpwuid."""
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


def _wait_oned(layout: Layout, spec: ServiceSpec, command: list[str]) -> list[str]:
    """Start ``command`` once oned answers and the service's auth file is there."""
    argv = [*onerun_argv(), "wait-oned"]
    if spec.auth_file is not None:
        argv += ["--file", str(layout.service_auth(spec.auth_file))]
    return [*argv, "--", *command]


def _service_command(layout: Layout, spec: ServiceSpec) -> list[str]:
    """The row's command, its absolute (container) paths under the root."""
    return [str(layout.path(arg)) if arg.startswith("/") else arg for arg in spec.argv]


def _program(spec: ServiceSpec, command: list[str], environment: dict[str, str],
             layout: Layout) -> Program:
    """A row's program: a critical or one-shot program is never restarted in place."""
    restarted = not (spec.critical or spec.one_shot)
    return Program(
        name=spec.name, command=command, priority=spec.priority, autorestart=restarted,
        startsecs=spec.startsecs, startretries=5 if restarted else 0,
        stopwaitsecs=spec.stopwait, environment=environment,
        log_files=tuple(layout.log_dir / name for name in spec.log_files),
    )


def _service_program(settings: Settings, layout: Layout, spec: ServiceSpec,
                     agent: bool) -> Program:
    env = _base_environment(layout)
    if spec.ssh_agent_client and agent:
        env["SSH_AUTH_SOCK"] = str(layout.ssh_agent_sock)
    if spec.path_first is not None:
        env["PATH"] = f"{layout.path(spec.path_first)}:{SYSTEM_PATH}"
    if spec.library_path is not None:
        env["LD_LIBRARY_PATH"] = str(layout.path(spec.library_path))
    command = _service_command(layout, spec)
    if spec.waits_for_oned:
        command = _wait_oned(layout, spec, command)
        env.update(_helper_environment(settings, layout))
    return _program(spec, command, env, layout)


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
    return _program(ONERUN_POST_START, argv, _helper_environment(settings, layout), layout)


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
    programs = [_service_program(settings, layout, SERVICE[name], agent) for name in services]
    if agent:
        programs.append(_program(ONERUN_SSH_ADD, [*onerun_argv(), "ssh-add"],
                                 _helper_environment(settings, layout), layout))
    if "oned" in services:
        programs.append(_post_start_program(settings, layout, heal_service_auth, record_start,
                                            record_key_fingerprint))
    programs.append(_program(ONERUN_LOGS, [*onerun_argv(), "logs", "--follow"],
                             _helper_environment(settings, layout), layout))
    return sorted(programs, key=lambda p: p.priority)
