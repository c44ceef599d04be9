"""The plan actions that found and join a zone (docs/ha.md, "Design").

``FoundZone`` runs oned solo on the freshly bootstrapped DB, registers this member with
one.zone.addserver and stops oned: the next observation finds the DB listing this member and
starts it in HA mode. ``JoinZone`` registers this member through the zone (a follower
forwards the write to the leader), then installs a copy of a member's DB and its service auth
files, only while this member's DB is still empty.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onerun.catalogue import SERVICE_AUTH_FILES
from onerun.database.classify import DbState
from onerun.database.sqlite import classify_sqlite
from onerun.errors import UnsafeStateError
from onerun.fsutil import atomic_write, chown_if_root, running_as_root
from onerun.ha.wire import WireError, fetch_snapshot, unpack_snapshot
from onerun.ha.zone import ZoneClient, local_servers, named
from onerun.layout import Layout
from onerun.log import Logger
from onerun.plan import ApplyContext
from onerun.runtime.oneapi import OneApiError
from onerun.settings import HaSettings, Settings

ONED = "/usr/bin/oned"
OVERRIDE_PATH = "/usr/lib/one/sh/override"  # the packaged oned unit's PATH (ssh wrapper)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ONED_START_TIMEOUT = 300.0  # a first bootstrap on a loaded node; oned needs ~5 s alone
ONED_STOP_TIMEOUT = 60.0  # oned took ~8 s to stop in a zone (Raft timer thread first)
CALL_TIMEOUT = 30.0  # a zone write is forwarded to the leader (oned's own limit is 10 s)
COPY_ATTEMPTS = 10
RETRY_SECONDS = 2.0


def local_endpoint(settings: Settings) -> str:
    """This member's oned as onerun reaches it from inside the pod."""
    assert settings.ha is not None
    host = settings.listen_address
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard listens on loopback too
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.ha.oned_port}/RPC2"


def session(settings: Settings) -> str:
    """oneadmin's session; HA requires ONEADMIN_PASSWORD (settings)."""
    assert settings.oneadmin_password is not None
    return f"oneadmin:{settings.oneadmin_password.reveal()}"


def _ha(settings: Settings) -> HaSettings:
    assert settings.ha is not None
    return settings.ha


def _oned_environment(layout: Layout) -> dict[str, str]:
    """What supervisord gives oned (onerun/runtime/services.py), for the solo run."""
    account = layout.oneadmin
    return {"HOME": str(layout.var_lib_one), "USER": account.name, "LOGNAME": account.name,
            "ONE_AUTH": str(layout.one_auth), "LANG": "C.UTF-8",
            "PATH": f"{layout.path(OVERRIDE_PATH)}:{SYSTEM_PATH}"}


def _log_tail(layout: Layout, lines: int = 15) -> str:
    try:
        text = (layout.log_dir / "oned.log").read_text(errors="replace")
    except OSError:
        return "(no oned.log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class FoundZone:
    """Solo oned on the bootstrapped DB -> register this member -> stop oned."""

    settings: Settings = field(repr=False)
    layout: Layout
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        ha = _ha(self.settings)
        return {"action": "found-zone", "name": ha.server_name, "endpoint": ha.endpoint,
                "steps": "start oned solo (SERVER_ID -1; it bootstraps an empty DB) -> "
                         "one.zone.addserver(0, NAME, ENDPOINT) -> the ID read back from "
                         "one.zone.info -> stop oned; the next observation starts it with "
                         "that SERVER_ID"}

    def apply(self, ctx: ApplyContext) -> None:
        ha = _ha(self.settings)
        as_user: dict[str, Any] = {}
        if running_as_root():
            as_user = {"user": ctx.uid, "group": ctx.gid, "extra_groups": []}
        ctx.log(f"founding the zone: oned starts solo to register {ha.server_name}")
        process = subprocess.Popen(
            [str(self.layout.binary(ONED)), "-f"], env=_oned_environment(self.layout),
            cwd=self.layout.var_lib_one, stdin=subprocess.DEVNULL, **as_user)
        try:
            client = self._wait_for_oned(process)
            server_id = client.add_server(ha.server_name, ha.endpoint)
            # Members that join copy this DB before any post-start ran: the fingerprint
            # must be in it for them to prove the shared ONE_KEY (onerun/onekey.py).
            from onerun.runtime.poststart import record_key_fingerprint

            record_key_fingerprint(client, self.layout, Logger(self.settings.log_format))
        finally:
            _stop(process)
        ctx.log(f"the zone registered {ha.server_name} as server {server_id} "
                f"({ha.endpoint}); oned stopped, to start again in HA mode")

    def _wait_for_oned(self, process: subprocess.Popen[bytes]) -> ZoneClient:
        client = ZoneClient(local_endpoint(self.settings), session(self.settings), 5.0)
        deadline = time.monotonic() + ONED_START_TIMEOUT
        while True:
            code = process.poll()
            if code is not None:
                raise UnsafeStateError(
                    f"oned exited with code {code} during its solo start, before this member "
                    f"was registered; the end of oned.log:\n{_log_tail(self.layout)}",
                    "fix what oned.log names; the next start resumes from the DB it left")
            try:
                client.call("one.user.info", -1, False)
                return client
            except OneApiError as exc:
                if time.monotonic() > deadline:
                    raise UnsafeStateError(
                        f"oned did not answer within {ONED_START_TIMEOUT:.0f} s of its solo "
                        f"start ({exc})", "see oned.log; the next start resumes") from exc
            self.sleep(1.0)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(ONED_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class JoinZone:
    """Register through the zone when needed, then install a copy of the zone's DB."""

    settings: Settings = field(repr=False)
    layout: Layout
    leader_endpoint: str
    source: str  # zone-service address of the member the copy comes from
    server_id: int | None  # None: the zone assigns one
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        ha = _ha(self.settings)
        register = ("already registered as server "
                    f"{self.server_id}" if self.server_id is not None else
                    f"one.zone.addserver through {self.leader_endpoint}, ID read back")
        return {"action": "join-zone", "name": ha.server_name, "endpoint": ha.endpoint,
                "path": str(self.layout.sqlite_db),
                "steps": f"{register} -> a copy of the DB (sqlite online backup) and the "
                         f"service auth files from the zone service at {self.source} -> "
                         "integrity check, this server in its SERVER_POOL -> installed as "
                         "one.db only while this member's DB is still empty"}

    def apply(self, ctx: ApplyContext) -> None:
        ha = _ha(self.settings)
        server_id = self.server_id
        if server_id is None:
            try:
                server_id = ZoneClient(self.leader_endpoint, session(self.settings),
                                       CALL_TIMEOUT).add_server(ha.server_name, ha.endpoint)
            except OneApiError as exc:
                raise UnsafeStateError(
                    f"the zone did not register {ha.server_name} through "
                    f"{self.leader_endpoint}: {exc}",
                    "the next start tries again; check that zone has a leader "
                    "(`onezone show 0`)") from exc
            ctx.log(f"the zone registered {ha.server_name} as server {server_id} "
                    f"(through {self.leader_endpoint})")
        self._copy(ctx, server_id)

    def _copy(self, ctx: ApplyContext, server_id: int) -> None:
        ha = _ha(self.settings)
        assert self.settings.oneadmin_password is not None
        password = self.settings.oneadmin_password.reveal()
        problem = ""
        for _attempt in range(COPY_ATTEMPTS):
            with tempfile.TemporaryDirectory(prefix=".onerun-join-",
                                             dir=self.layout.state_dir) as scratch:
                try:
                    tar = Path(scratch) / "snapshot.tar"
                    fetch_snapshot(self.source, password, tar)
                    db, files = unpack_snapshot(tar, Path(scratch))
                    tar.unlink()
                    copied = classify_sqlite(db)
                    servers = local_servers(db) or ()
                except (WireError, UnsafeStateError) as exc:
                    problem = str(exc)
                else:
                    if copied.state is not DbState.BOOTSTRAPPED:
                        problem = f"the copy is not a bootstrapped DB ({copied.detail})"
                    elif [s.id for s in named(servers, ha.server_name)] != [server_id]:
                        problem = (f"the copy does not list {ha.server_name} as server "
                                   f"{server_id} yet")
                    else:
                        self._install(ctx, db, files)
                        ctx.log(f"installed a copy of the zone's DB from {self.source} "
                                f"({len(files)} service auth file(s))")
                        return
            ctx.log(f"copying the zone's DB from {self.source}: {problem}; trying again")
            self.sleep(RETRY_SECONDS)
        raise UnsafeStateError(f"no usable copy of the zone's DB from {self.source}: "
                               f"{problem}", "the next start tries again")

    def _install(self, ctx: ApplyContext, db: Path, files: dict[str, bytes]) -> None:
        target = self.layout.sqlite_db
        current = classify_sqlite(target)
        if current.state is not DbState.EMPTY:  # never replace a DB that holds anything
            raise UnsafeStateError(
                f"{target} is no longer empty ({current.detail}): the copy was not installed",
                "start again: the next start decides on what the DB holds now")
        for name, content in files.items():
            if name in SERVICE_AUTH_FILES:
                atomic_write(self.layout.service_auth(name), content, 0o600, ctx.uid, ctx.gid)
        chown_if_root(db, ctx.uid, ctx.gid)
        os.chmod(db, 0o600)
        for suffix in ("-journal", "-wal", "-shm"):  # a journal would be replayed into it
            with contextlib.suppress(FileNotFoundError):
                target.with_name(target.name + suffix).unlink()
        os.replace(db, target)
