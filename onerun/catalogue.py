"""Every program supervisord runs, one ``ServiceSpec`` row each: the OpenNebula services
(their names are the ONERUN_SERVICES contract) and onerun's own helper programs.

A row holds every fact about its program: what shows it is installed, how the packaged
unit starts it, the auth file it needs, its port, whether the pod dies with it, whether it
waits for oned, its log files, its start and stop timing and the first release that ships
it. onerun/runtime/services.py turns the rows into supervisord programs; settings,
layout, policy and the liveness probe read the names, paths and flags they need here.

Imports nothing: the probe loads this module on every run (through onerun/layout.py and
onerun/runtime/critical.py), so the row type is a plain class: a dataclass would load
dataclasses and inspect, which the probe otherwise never imports (docs/probes.md).
"""

from __future__ import annotations


class ServiceSpec:
    """One program supervisord runs, frozen.

    Absolute paths are container paths, mapped under onerun's root where they are used.
    ``argv`` is its command, the packaged unit's ExecStart (share/pkgs/services/systemd/
    *.service in OpenNebula/one) unless its row says why not; empty for onerun's own
    programs, whose onerun command onerun/runtime/services.py builds. ``priority``
    orders supervisord's start (ascending) and stop (descending, one program after
    another); ``stopwait`` is how long it waits after SIGTERM before SIGKILL.
    """

    __slots__ = (
        "argv", "auth_file", "critical", "installed_by", "library_path", "log_files", "name",
        "one_shot", "path_first", "port", "priority", "since", "ssh_agent_client", "startsecs",
        "stopwait", "waits_for_oned",
    )

    name: str  # the supervisord program, and for a service its ONERUN_SERVICES name
    installed_by: str | None  # the file whose presence means installed; None: part of onerun
    argv: tuple[str, ...]
    auth_file: str | None  # the service auth file in ~oneadmin/.one it needs, not empty
    port: int | None  # the TCP port its packaged config listens on
    critical: bool  # its FATAL or unexpected exit ends the pod; never restarted in place
    one_shot: bool  # runs once and exits; never restarted
    waits_for_oned: bool  # started through `onerun wait-oned` (and its auth file)
    ssh_agent_client: bool  # gets SSH_AUTH_SOCK when the agent runs (drivers' ssh)
    path_first: str | None  # a directory put before the system PATH
    library_path: str | None  # its LD_LIBRARY_PATH
    log_files: tuple[str, ...]  # files it writes itself in /var/log/one
    priority: int
    startsecs: int  # how long it must run to count as started
    stopwait: int
    since: str | None  # the first release that ships it; None: every 7.x release

    def __init__(self, name: str, *, priority: int, stopwait: int,
                 installed_by: str | None = None, argv: tuple[str, ...] = (),
                 auth_file: str | None = None, port: int | None = None,
                 critical: bool = False, one_shot: bool = False, waits_for_oned: bool = False,
                 ssh_agent_client: bool = False, path_first: str | None = None,
                 library_path: str | None = None, log_files: tuple[str, ...] = (),
                 startsecs: int = 3, since: str | None = None) -> None:
        """Each argument is kept in the slot of the same name."""
        given = locals()
        for field in self.__slots__:
            object.__setattr__(self, field, given[field])

    def __setattr__(self, field: str, value: object) -> None:
        raise AttributeError(f"ServiceSpec is frozen: cannot set {field}")

    def __delattr__(self, field: str) -> None:
        raise AttributeError(f"ServiceSpec is frozen: cannot delete {field}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, field) for field in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceSpec) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{field}={getattr(self, field)!r}" for field in self.__slots__)
        return f"ServiceSpec({fields})"


# Where ssh-agent listens; oned and HEM find it through SSH_AUTH_SOCK.
SSH_AGENT_SOCKET = "/run/one/ssh-agent.sock"

# Timing. oned stops in about 6 s (measured, docs/processes.md); a SIGKILLed oned leaves
# its lock file and may cut a DB write short, so it gets 30. The Ruby and Node servers are
# stateless and exit at once on SIGTERM; onerun's helpers have nothing to finish.
_SERVICE_STOPWAIT = 3
_HELPER_STOPWAIT = 2

# The OpenNebula services in the order of the ONERUN_SERVICES contract (messages list
# them so). Log files: each server's own LOG constant (e.g. ONEFLOW_LOG in
# src/flow/oneflow-server.rb in OpenNebula/one). Ports: the packaged configs (oned.conf's
# PORT, each /etc/one/<service>-server.conf). Auth files: the units'
# AssertFileNotEmpty lines.
SERVICES = (
    ServiceSpec(
        "oned", installed_by="/usr/bin/oned", argv=("/usr/bin/oned", "-f"), port=2633,
        # A crashed oned leaves its lock (created O_EXCL, removed on a clean exit only:
        # src/nebula/oned.cc in OpenNebula/one): restarting it in place fails, so the pod
        # ends and the next start cleans up.
        critical=True, ssh_agent_client=True,
        # As in the packaged unit (share/pkgs/services/systemd/opennebula.service in
        # OpenNebula/one): the override directory holds the drivers' ssh wrapper.
        path_first="/usr/lib/one/sh/override",
        log_files=("oned.log", "monitor.log"), priority=20, startsecs=10, stopwait=30),
    ServiceSpec(
        "hem", installed_by="/usr/lib/one/onehem/onehem-server.rb",
        argv=("/usr/bin/ruby", "/usr/lib/one/onehem/onehem-server.rb"),
        # It loads the hooks once at its start (src/hem/onehem-server.rb in OpenNebula/one).
        waits_for_oned=True, ssh_agent_client=True, log_files=("onehem.log",),
        priority=30, stopwait=_SERVICE_STOPWAIT),
    ServiceSpec(
        "fireedge", installed_by="/usr/lib/one/fireedge/dist/index.js",
        # node itself, without the unit's sh that appends its output to fireedge.log and
        # fireedge.error: here its output goes to the container's log.
        argv=("/usr/bin/node", "/usr/lib/one/fireedge/dist/index.js"),
        auth_file="sunstone_auth", port=2616, waits_for_oned=True,
        log_files=("fireedge.log",), priority=41, stopwait=_SERVICE_STOPWAIT),
    ServiceSpec(
        "guacd", installed_by="/usr/share/one/guacd/sbin/guacd",
        # Loopback only (the package binds 0.0.0.0): guacd takes unauthenticated connect
        # instructions; FireEdge, in this container, reaches it at localhost:4822.
        argv=("/usr/share/one/guacd/sbin/guacd", "-f", "-b", "127.0.0.1", "-L", "info"),
        port=4822, library_path="/usr/share/one/guacd/lib",
        priority=40, stopwait=_SERVICE_STOPWAIT),
    ServiceSpec(
        "oneflow", installed_by="/usr/lib/one/oneflow/oneflow-server.rb",
        argv=("/usr/bin/ruby", "/usr/lib/one/oneflow/oneflow-server.rb"),
        auth_file="oneflow_auth", port=2474, waits_for_oned=True,
        log_files=("oneflow.log",), priority=42, stopwait=_SERVICE_STOPWAIT),
    ServiceSpec(
        "onegate", installed_by="/usr/lib/one/onegate/onegate-server.rb",
        argv=("/usr/bin/ruby", "/usr/lib/one/onegate/onegate-server.rb"),
        auth_file="onegate_auth", port=5030, waits_for_oned=True,
        log_files=("onegate.log",), priority=43, stopwait=_SERVICE_STOPWAIT),
    ServiceSpec(
        "oneform", installed_by="/usr/lib/one/oneform/oneform-server.rb",
        argv=("/usr/bin/ruby", "/usr/lib/one/oneform/oneform-server.rb"),
        auth_file="oneform_auth", port=13013, waits_for_oned=True,
        log_files=("oneform.log",), priority=44, stopwait=_SERVICE_STOPWAIT, since="7.2"),
    ServiceSpec(
        "oneks", installed_by="/usr/lib/one/oneks/oneks-server.rb",
        argv=("/usr/bin/ruby", "/usr/lib/one/oneks/oneks-server.rb"),
        auth_file="oneks_auth", port=10780, waits_for_oned=True,
        log_files=("oneks.log",), priority=45, stopwait=_SERVICE_STOPWAIT, since="7.4"),
    ServiceSpec(
        "ssh-agent", installed_by="/usr/bin/ssh-agent",
        # The agent itself, in the foreground, as supervisord's program: no process of
        # onerun's stays resident as its parent. Its keys: the onerun-ssh-add one-shot.
        argv=("/usr/bin/ssh-agent", "-D", "-a", SSH_AGENT_SOCKET),
        critical=True, priority=10, stopwait=_HELPER_STOPWAIT),
)

# onerun's own programs. Their output and critical failures are handled inside
# supervisord's process (onerun/runtime/pid1.py), by no program of their own.
# The resident follower of the services' log files. It stops last and prints what oned
# wrote while stopping.
ONERUN_LOGS = ServiceSpec("onerun-logs", priority=1, stopwait=3)
# Once the agent listens, it loads oneadmin's keys (the agent unit's ExecStartPost).
ONERUN_SSH_ADD = ServiceSpec("onerun-ssh-add", one_shot=True, priority=11, startsecs=0,
                             stopwait=_HELPER_STOPWAIT)
# Once oned answers, it heals the service auth files and records the start.
ONERUN_POST_START = ServiceSpec("onerun-post-start", critical=True, one_shot=True,
                                priority=90, startsecs=0, stopwait=_HELPER_STOPWAIT)

ONERUN_PROGRAMS = (ONERUN_LOGS, ONERUN_SSH_ADD, ONERUN_POST_START)

SERVICE = {spec.name: spec for spec in SERVICES}
SERVICE_NAMES = tuple(SERVICE)
INSTALLED_BY = {spec.name: spec.installed_by for spec in SERVICES if spec.installed_by}

# The auth files in the order oned's user bootstrap writes them; it aborts at the first one
# that already exists (src/um/UserPool.cc in OpenNebula/one). Each is some row's auth_file.
SERVICE_AUTH_FILES = ("sunstone_auth", "onegate_auth", "oneflow_auth", "oneform_auth",
                      "oneks_auth")
