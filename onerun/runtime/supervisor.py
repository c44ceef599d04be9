"""supervisord: its config rendered from templates/supervisord.conf.j2, the actions that
prepare for it, and the final exec with an environment scrubbed to an allow-list.

"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import re
import shlex
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from onerun.catalogue import ONERUN_LOGS
from onerun.errors import OnerunError
from onerun.fsutil import atomic_write, running_as_root
from onerun.layout import Layout
from onerun.plan import Action, ApplyContext, EnsureDirectory, RemoveFile
from onerun.runtime.logs import STATE_FILE, current_ends
from onerun.runtime.services import Program
from onerun.settings import Settings

# Variables passed on to supervisord and so to every program. Nothing else: the
# environment holds DB_PASSWORD, ONEADMIN_PASSWORD, ONE_KEY and their *_FILE paths.
_ALLOWED = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "HOSTNAME", "HOME",
    "ONERUN_ROOT", "ONERUN_LOG_FORMAT", "ONERUN_LOG_MAX_BYTES", "ONE_XMLRPC",
})
_ALLOWED_PREFIXES = ("LC_",)
_NEVER = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY|_FILE)$|^ONE_KEY$")


def stop_budget_seconds(programs: list[Program]) -> int:
    """Worst-case stop time: supervisord stops one program after another, each waiting up
    to its stopwaitsecs before SIGKILL, so the budget is their sum (docs/processes.md)."""
    return sum(p.stopwaitsecs for p in programs)


@dataclass(frozen=True)
class EnsureLogFile:
    """Create a log file a service writes, owned by oneadmin (only that file, never
    recursively), so that the follower (oneadmin) can bound it.

    /var/log/one belongs to oneadmin, so whatever is at the path may have been put there
    by oneadmin: as root, following a link would create, open or chown any file it
    names. The file is opened without following a link (O_NOFOLLOW), without waiting
    for a FIFO's reader (O_NONBLOCK), and its owner is fixed through that descriptor;
    anything but a regular file is left alone and reported.
    """

    path: Path

    def describe(self) -> dict[str, Any]:
        return {"action": "ensure-log-file", "path": str(self.path), "owner": "oneadmin",
                "mode": "0640"}

    def apply(self, ctx: ApplyContext) -> None:
        flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_NOCTTY)
        try:
            fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                ctx.log(f"left {self.path} alone: it is a symbolic link, and onerun follows "
                        "no link in a directory oneadmin can write")
                return
            if exc.errno in (errno.ENXIO, errno.EISDIR):
                ctx.log(f"left {self.path} alone: not a regular file")
                return
            raise
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                ctx.log(f"left {self.path} alone: not a regular file")
                return
            if (status.st_uid, status.st_gid) != (ctx.uid, ctx.gid) and running_as_root():
                os.fchown(fd, ctx.uid, ctx.gid)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class MarkLogsShown:
    """Before supervisord starts: lines already in the logs are from an earlier run and
    are not printed again by the follower (onerun/runtime/logs.py); anything written from now on
    is."""

    log_dir: Path

    def describe(self) -> dict[str, Any]:
        return {"action": "mark-logs-shown", "path": str(self.log_dir / STATE_FILE),
                "owner": "oneadmin", "why": "onerun-logs prints only lines from this run on"}

    def apply(self, ctx: ApplyContext) -> None:
        atomic_write(self.log_dir / STATE_FILE, json.dumps(current_ends(self.log_dir)).encode(),
                     0o644, ctx.uid, ctx.gid)


@dataclass(frozen=True)
class WriteSupervisorConfig:
    """The rendered config, owned by the user supervisord runs as: a oneadmin-writable
    file that a root supervisord executes would hand oneadmin root."""

    path: Path
    content: str

    def describe(self) -> dict[str, Any]:
        return {"action": "write", "path": str(self.path), "owner": "supervisord's user",
                "mode": "0644", "content": f"{len(self.content)} bytes",
                "why": "supervisord config (no secrets)"}

    def apply(self, ctx: ApplyContext) -> None:
        atomic_write(self.path, self.content.encode(), 0o644, os.geteuid(), os.getegid())


def _argv_filter(argv: list[str]) -> str:
    """supervisord splits ``command`` with shlex and expands ``%(...)s``."""
    return " ".join(shlex.quote(arg) for arg in argv).replace("%", "%%")


def _env_filter(environment: Mapping[str, str]) -> str:
    """KEY="value",... as supervisord parses it; values cannot hold quotes or newlines."""
    pairs = []
    for key, value in environment.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or re.search(r'["\n\r]', value):
            raise OnerunError(f"cannot pass {key} to supervisord: unsupported characters")
        pairs.append(f'{key}="{value}"'.replace("%", "%%"))
    return ",".join(pairs)


def render_config(layout: Layout, programs: list[Program], *, run_as_root: bool) -> str:
    """The supervisord config for ``programs``; ``user=`` lines only when root."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("onerun.runtime", "templates"),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,  # noqa: S701 - an INI file, not HTML
    )
    env.filters["argv"] = _argv_filter
    env.filters["env"] = _env_filter
    return env.get_template("supervisord.conf.j2").render(
        programs=programs, run_as_root=run_as_root, oneadmin=layout.oneadmin.name,
        socket=layout.supervisor_sock, pidfile=layout.run_onerun / "supervisord.pid",
        # A fixed directory oneadmin owns (its home), never wherever onerun was started.
        # The packaged units (share/pkgs/services/systemd/opennebula*.service) set no
        # WorkingDirectory, so systemd runs them in /, which oneadmin cannot write.
        workdir=layout.var_lib_one,
        stop_budget=stop_budget_seconds(programs),
        critical=[p.name for p in programs if p.critical],
        raw_output=[p.name for p in programs if p.name == ONERUN_LOGS.name],
    )


def supervisor_actions(settings: Settings, layout: Layout,
                       programs: list[Program]) -> list[Action]:
    """Directories, log files and the config supervisord needs, in order."""
    del settings  # the programs carry every setting that matters here
    actions: list[Action] = [
        EnsureDirectory(layout.run_onerun, 0o755, owned_by_oneadmin=False,
                        why="supervisord's config and socket"),
        EnsureDirectory(layout.log_dir, 0o755, why="OpenNebula's logs"),
    ]
    seen: set[Path] = set()
    for program in programs:
        for path in program.log_files:
            if path not in seen:
                seen.add(path)
                actions.append(EnsureLogFile(path))
    if any(program.name == "ssh-agent" for program in programs):
        actions.append(RemoveFile(layout.ssh_agent_sock,
                                  why="left by the previous ssh-agent; ssh-agent -a refuses "
                                      "an existing path"))
    actions.append(MarkLogsShown(layout.log_dir))
    actions.append(WriteSupervisorConfig(
        layout.supervisor_conf, render_config(layout, programs, run_as_root=running_as_root())))
    return actions


def supervisord_argv(layout: Layout) -> list[str]:
    """``onerun supervisord -n -c <conf>``: supervisord's main loop with onerun's hook in
    its process (onerun/runtime/pid1.py), run by this interpreter, which has supervisor
    installed."""
    if importlib.util.find_spec("supervisor") is None:
        raise OnerunError("supervisord is not installed (pip install supervisor)")
    return [sys.executable, "-m", "onerun", "supervisord", "-n", "-c",
            str(layout.supervisor_conf)]


def scrubbed_environment(environ: Mapping[str, str], layout: Layout) -> dict[str, str]:
    """The allow-listed part of ``environ``: no password, key or secret-file variable
    reaches supervisord or any program."""
    kept = {
        key: value for key, value in environ.items()
        if (key in _ALLOWED or key.startswith(_ALLOWED_PREFIXES)) and not _NEVER.search(key)
    }
    kept.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    kept["ONERUN_ROOT"] = str(layout.root)
    return kept


def exec_supervisord(layout: Layout, environ: Mapping[str, str]) -> NoReturn:
    """Replace this process with supervisord (PID 1 in the container gets SIGTERM); it
    keeps this process's stdout, the container's, and prints every program's output."""
    argv = supervisord_argv(layout)
    os.execve(argv[0], argv, scrubbed_environment(environ, layout))  # noqa: S606 - argv list
