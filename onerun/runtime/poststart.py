"""What runs once oned answers: ``onerun wait-oned -- CMD`` and ``onerun post-start``.

``wait-oned`` holds back programs that need oned (the hook manager loads its hooks
once at start and carries on without them if oned is not there, src/hem/onehem-server.rb), and
services whose auth file oned writes during its bootstrap.

``post-start`` is the one-shot that finishes a start: it heals lost service auth files
(a new serveradmin secret: oned stores sha256(secret), the files hold the secret,
src/um/UserPool.cc), records a fingerprint of one_key in oneadmin's template (in the database,
so that a later start can prove a ONE_KEY even after the volume is lost; onerun/onekey.py),
and then records the completed start on the volume.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

from onerun.fsutil import atomic_write
from onerun.layout import Layout
from onerun.log import Logger
from onerun.marker import write_start_record
from onerun.runtime.oneapi import (
    OneApiError,
    OneClient,
    endpoint_from_env,
    one_auth_path,
    read_session,
)
from onerun.runtime.services import service_auth_files

SERVERADMIN = "serveradmin"
SERVERADMIN_ID = 1
RETRY_SECONDS = 1.0
CALL_TIMEOUT = 5.0


def wait_for_oned(layout: Layout, log: Logger, *, sleep: Callable[[float], None] = time.sleep,
                  endpoint: str | None = None) -> OneClient:
    """Retry one.user.info as oneadmin until oned answers; log once per change of reason."""
    endpoint = endpoint or endpoint_from_env()
    auth = one_auth_path(layout.one_auth)
    last_reason = ""
    while True:
        try:
            client = OneClient(endpoint, read_session(auth), CALL_TIMEOUT)
            client.call("one.user.info", -1, False)
            log.info(f"oned answers at {endpoint}")
            return client
        except (OSError, OneApiError) as exc:
            reason = exc.__class__.__name__ if isinstance(exc, OSError) else str(exc)
            if reason != last_reason:
                log.info(f"waiting for oned at {endpoint}: {reason}")
                last_reason = reason
        sleep(RETRY_SECONDS)


def wait_for_files(paths: list[Path], log: Logger,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Until every file exists and is not empty (the packaged units assert this)."""
    for path in paths:
        logged = False
        while not (path.is_file() and path.stat().st_size > 0):
            if not logged:
                log.info(f"waiting for {path}")
                logged = True
            sleep(RETRY_SECONDS)


def heal_service_auth_files(client: OneClient, layout: Layout, log: Logger,
                      sleep: Callable[[float], None] = time.sleep, attempts: int = 5) -> None:
    """New serveradmin secret in oned first, then every service auth file of this release.

    In that order: a failure after the API call leaves files to heal at the next start,
    never files whose secret oned does not know.
    """
    secret = secrets.token_hex(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    for attempt in range(1, attempts + 1):
        try:
            client.call("one.user.passwd", SERVERADMIN_ID, digest)
            break
        except OneApiError as exc:
            if attempt == attempts:
                raise
            log.warning(f"resetting serveradmin's secret failed ({exc}); retrying")
            sleep(RETRY_SECONDS)
    account = layout.oneadmin
    names = service_auth_files(layout)
    for name in names:
        atomic_write(layout.service_auth(name), f"{SERVERADMIN}:{secret}\n".encode(), 0o600,
                     account.uid, account.gid)
    log.info(f"serveradmin has a new secret; wrote {', '.join(names)}")


class Caller(Protocol):
    """An oned API client: OneClient, or the zone's client while a founder's oned runs."""

    def call(self, method: str, *args: Any) -> Any: ...


ONEADMIN_ID = 0
TEMPLATE_MERGE = 1  # one.user.update: merge into the template instead of replacing it


def record_key_fingerprint(client: Caller, layout: Layout, log: Logger) -> None:
    """Put the fingerprint of the volume's one_key into oneadmin's template, once.

    A fingerprint already there is never changed: the start checked it against this key
    (policy), so a different one means the database changed since, which the next start
    must see. Only the fingerprint travels; the key is read here and never sent or logged.
    """
    # Here, not at the top: onerun.database's __init__ loads PyMySQL and tenacity, and
    # wait-oned, which imports this module, runs without them.
    from onerun.database.classify import values_at
    from onerun.onekey import FINGERPRINT_ATTRIBUTE, KEY_BYTES, fingerprint

    try:
        tokens = layout.one_key.read_text(encoding="utf-8").split()
    except OSError as error:
        log.warning(f"one_key's fingerprint not recorded: {layout.one_key}: {error.strerror}")
        return
    if not tokens or len(tokens[0].encode()) < KEY_BYTES:
        log.warning(f"one_key's fingerprint not recorded: {layout.one_key} holds no full key")
        return
    wanted = fingerprint(tokens[0])
    try:
        body = client.call("one.user.info", ONEADMIN_ID, False)
        recorded = values_at(str(body), (f"TEMPLATE/{FINGERPRINT_ATTRIBUTE}",))
        if recorded:
            if recorded[0] != wanted:
                log.warning(f"oneadmin's {FINGERPRINT_ATTRIBUTE} does not match "
                            f"{layout.one_key}: left as it is; the next start refuses this key")
            return
        client.call("one.user.update", ONEADMIN_ID, f'{FINGERPRINT_ATTRIBUTE}="{wanted}"',
                    TEMPLATE_MERGE)
    except OneApiError as error:  # not worth stopping a running cloud: the next start retries
        log.warning(f"one_key's fingerprint not recorded ({error}); the next start tries again")
        return
    log.info(f"recorded one_key's fingerprint in oneadmin's template ({FINGERPRINT_ATTRIBUTE})")


WAIT_ONED_USAGE = "usage: onerun wait-oned [--file FILE]... [--root R] -- COMMAND [ARG]..."


def wait_then_exec(layout: Layout, log: Logger, files: list[Path],
                   command: list[str]) -> NoReturn:
    """Wait until oned answers and every file is there, then become ``command``."""
    wait_for_oned(layout, log)
    wait_for_files(files, log)
    os.execvp(command[0], command)  # noqa: S606 - argv list from supervisord's config


def wait_oned_main(argv: list[str]) -> int:
    """``onerun wait-oned``, parsed by hand: several of these wait while oned bootstraps,
    and the click CLI would cost each one its memory. Options end at ``--`` or at the
    first argument that is not one of them; the rest is the command."""
    files: list[Path] = []
    root: str | None = None
    args = list(argv)
    while args and args[0] != "--":
        name, eq, inline = args[0].partition("=")
        if args[0] in ("-h", "--help"):
            print(f"{WAIT_ONED_USAGE}\n\nWait until oned answers (and every FILE exists and is not"
                  " empty), then exec COMMAND.")
            return 0
        if name not in ("--file", "--root"):
            break
        args.pop(0)
        if not eq:
            if not args:
                print(f"{name} needs a value; {WAIT_ONED_USAGE}", file=sys.stderr)
                return 2
            inline = args.pop(0)
        if name == "--file":
            files.append(Path(inline))
        else:
            root = inline
    command = args[1:] if args[:1] == ["--"] else args
    if not command:
        print(f"no COMMAND to run once oned answers; {WAIT_ONED_USAGE}", file=sys.stderr)
        return 2
    wait_then_exec(Layout.from_env(root), Logger(os.environ.get("ONERUN_LOG_FORMAT", "text")),
                   files, command)


def post_start(layout: Layout, log: Logger, *, heal_service_auth: bool,
               record_fingerprint: bool, record_start: tuple[str, str] | None) -> None:
    """Once oned answers: heal service auth files, record one_key's fingerprint, record the
    start on the volume (``record_start``: release and DB version, "" for unknown)."""
    client = wait_for_oned(layout, log)
    if heal_service_auth:
        heal_service_auth_files(client, layout, log)
    if record_fingerprint:
        record_key_fingerprint(client, layout, log)
    if record_start is not None:
        release, db_version = (value or None for value in record_start)
        account = layout.oneadmin
        write_start_record(layout.volume_marker, release, db_version, account.uid, account.gid)
        log.info(f"recorded this start in {layout.volume_marker}")
