"""The schema upgrade as one plan action: back up, ``onedb upgrade``, verify, or put it back.

oned never migrates by itself and refuses any DB version other than its own
(``check_db_version`` in src/nebula/SystemDB.cc, OpenNebula/one), so an older DB must go
through ``onedb upgrade`` with oned stopped. onedb run with ``--no-backup`` leaves a
half-migrated schema when it fails, which is why onerun takes its own backup first (onedb's
own would put the MariaDB password on mysqldump's argv, src/onedb/onedb_backend.rb) and
restores it on any failure. oned is never started after a failure: ``apply`` raises
UnsafeStateError (exit 3), which stops the start pipeline before supervisord.

SIGTERM/SIGINT while onedb runs are held, not raised: killing onedb at once would throw
away a migration that may be seconds from its end. onedb gets ONERUN_UPGRADE_STOP_GRACE
seconds to finish; then it is stopped and the backup goes back. Either way the start ends
with Interrupted (exit 143) and a message saying which happened (docs/upgrades.md).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from onerun.backup import (
    known_secrets,
    make_backup,
    mask,
    prune_after_success,
    restore_backup,
    write_restore_failed_marker,
)
from onerun.database import backend_for
from onerun.errors import Interrupted, UnsafeStateError
from onerun.fsutil import running_as_root
from onerun.layout import Layout
from onerun.plan import ApplyContext
from onerun.settings import Settings
from onerun.versions import Version

ONEDB = "/usr/bin/onedb"
OUTPUT_LINES = 20
ONEDB_KILL_AFTER = 5.0  # seconds between the SIGTERM and the SIGKILL onerun sends onedb
_OUTPUT_DRAIN = 5.0  # seconds to read onedb's last output after it exited
_POLL = 0.1
_PATH = "/usr/local/bin:/usr/bin:/bin"

Log = Callable[[str], None]


def describe_image_for_db(db_version: str) -> str:
    """Which image runs a DB of this version: expected DB versions are per minor release."""
    try:
        series = Version.parse(db_version).minor_series
    except ValueError:
        return f"an image whose OpenNebula expects DB version {db_version}"
    return f"an image of OpenNebula {series}.x (it expects DB version {db_version})"


def onedb_command(settings: Settings, layout: Layout) -> list[str]:
    """``onedb upgrade --no-backup`` with explicit connection options and no password.

    Explicit options stop onedb from parsing oned.conf through Augeas (src/onedb/onedb.rb;
    the backend says which); the password reaches it only through its environment
    (``onedb_environment``).
    """
    return [str(layout.binary(ONEDB)), "upgrade", "--no-backup",
            *backend_for(settings).onedb_options(settings, layout)]


def onedb_environment(settings: Settings, layout: Layout) -> dict[str, str]:
    """A minimal environment, plus what the backend needs onedb to log in with."""
    env = {"HOME": str(layout.var_lib_one), "PATH": _PATH, "LANG": "C.UTF-8",
           "ONE_AUTH": str(layout.one_auth), "USER": layout.oneadmin.name,
           "LOGNAME": layout.oneadmin.name}
    return {**env, **backend_for(settings).onedb_environment(settings)}


class HeldSignals:
    """While active, SIGTERM and SIGINT are noted instead of raised (main thread only).

    Why: from the restore-failed marker's write to the end of a restore, an exception
    raised by a signal handler would kill onedb mid-migration or cut a restore short. The
    caller looks at ``name`` and decides; the previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.name: str | None = None  # the first signal that arrived
        self.at: float | None = None  # when (time.monotonic())
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> HeldSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if self.name is None:
            self.name = signal.Signals(signum).name
            self.at = time.monotonic()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@dataclass(frozen=True)
class OnedbResult:
    returncode: int
    output: list[str]  # the last OUTPUT_LINES lines, secrets already masked
    stopped: bool = False  # onerun stopped onedb: a signal came and the grace ran out


def _stop_onedb(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM onedb's process group, SIGKILL it after ONEDB_KILL_AFTER seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(ONEDB_KILL_AFTER)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _await_onedb(process: subprocess.Popen[bytes], signals: HeldSignals | None, grace: float,
                 log: Log) -> bool:
    """Wait for onedb to exit; True when a held signal's grace ran out and onedb was stopped."""
    deadline: float | None = None
    while True:
        try:
            process.wait(_POLL)
            return False
        except subprocess.TimeoutExpired:
            pass
        if signals is None or signals.name is None or signals.at is None:
            continue
        if deadline is None:
            deadline = signals.at + grace
            log(f"{signals.name} received while onedb upgrades the database: letting it finish"
                f" for up to {grace:g}s (ONERUN_UPGRADE_STOP_GRACE)")
        if time.monotonic() >= deadline:
            log(f"onedb did not finish within {grace:g}s of {signals.name}: stopping it")
            _stop_onedb(process)
            return True


def run_onedb(settings: Settings, layout: Layout, signals: HeldSignals | None = None,
              log: Log = lambda _message: None) -> OnedbResult:
    """Run onedb as oneadmin (dropping privileges when root) and keep its last lines masked.

    onedb runs in its own session, so a terminal's Ctrl-C reaches onerun alone, which
    decides (``signals``); a thread reads its output so the wait stays responsive.
    """
    account = layout.oneadmin
    secrets = known_secrets(settings, layout)
    as_user: dict[str, Any] = {}
    if running_as_root():
        as_user = {"user": account.uid, "group": account.gid, "extra_groups": []}
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
    lock = threading.Lock()

    def read(stream: IO[bytes]) -> None:
        for raw in stream:
            line = mask(raw.decode(errors="replace").rstrip("\n"), secrets)
            with lock:
                tail.append(line)

    process = subprocess.Popen(
        onedb_command(settings, layout), env=onedb_environment(settings, layout),
        cwd=layout.var_lib_one, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, **as_user,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=read, args=(process.stdout,), name="onerun-onedb-output",
                              daemon=True)
    reader.start()
    try:
        stopped = _await_onedb(process, signals, settings.upgrade_stop_grace, log)
    finally:
        if process.poll() is None:  # an error in onerun: never leave onedb migrating alone
            _stop_onedb(process)
    reader.join(_OUTPUT_DRAIN)  # EOF soon after the exit, unless a child of onedb holds the pipe
    if not reader.is_alive():
        process.stdout.close()
    with lock:
        output = list(tail)
    return OnedbResult(process.returncode, output, stopped)


@dataclass(frozen=True)
class UpgradeSchema:
    """Back up, ``onedb upgrade --no-backup`` as oneadmin, verify both versions; or restore.

    While onedb runs, layout.restore_failed_marker names the backup: if the pod is killed
    mid-migration, the next start refuses (the DB may be half-migrated) instead of
    backing up the broken state and trying again.
    """

    settings: Settings = field(repr=False)
    layout: Layout
    db_version: str
    target_version: str

    def describe(self) -> dict[str, Any]:
        return {
            "action": "upgrade-schema", "backend": self.settings.db_backend,
            "from": self.db_version, "to": self.target_version,
            "steps": (f"backup into {self.layout.backups}"
                      f" -> {' '.join(onedb_command(self.settings, self.layout))}"
                      " (as oneadmin, DB password via ONE_DB_PASSWORD)"
                      " -> verify DB and local DB version"
                      " | on failure: restore the backup, keep it, exit 3"
                      f" | on SIGTERM: onedb gets {self.settings.upgrade_stop_grace:g}s to finish,"
                      " else it is stopped and the backup restored; exit 143"),
        }

    def apply(self, ctx: ApplyContext) -> None:
        log = ctx.log
        backup = self._backup(log)
        grace = self.settings.upgrade_stop_grace
        output: list[str] = []
        stopped = False
        failure: str | None
        with HeldSignals() as signals:
            write_restore_failed_marker(
                self.layout, backup,
                f"upgrade from {self.db_version} to {self.target_version} started and did not"
                " finish (interrupted): the database may be half-migrated")
            log(f"upgrading the database from {self.db_version} to {self.target_version} with"
                " onedb upgrade (can take a while on a large database)")
            try:
                result = run_onedb(self.settings, self.layout, signals, log)
                output, stopped = result.output, result.stopped
                if stopped:
                    failure = (f"{signals.name} arrived and onedb did not finish within"
                               f" {grace:g}s (ONERUN_UPGRADE_STOP_GRACE)")
                elif result.returncode != 0:
                    failure = f"onedb upgrade exited {result.returncode}"
                else:
                    failure = self._versions()
            except Exception as error:  # whatever went wrong, the backup goes back
                failure = f"{type(error).__name__}: {error}"
            if failure is None:
                self.layout.restore_failed_marker.unlink(missing_ok=True)
                log(f"upgraded the database to {self.target_version}; the backup is kept at"
                    f" {backup}")
                prune_after_success(self.layout, "upgrade", self.settings.backup_keep,
                                    "ONERUN_BACKUP_KEEP", log)
            else:
                self._put_back(ctx, backup, "was stopped" if stopped else "failed", failure,
                               output)
                if signals.name is not None and not stopped:
                    log(f"{signals.name} arrived during the failed upgrade or its restore;"
                        " the restore finished first")
        # The previous handlers are back: a signal now ends the start as anywhere else.
        if stopped:
            raise Interrupted(
                f"stopped by {signals.name} during the schema upgrade from {self.db_version}"
                f" to {self.target_version}: onedb did not finish within {grace:g}s"
                " (ONERUN_UPGRADE_STOP_GRACE) and was stopped; the database was restored from"
                f" {backup} (kept there); the next start upgrades again")
        if failure is not None:
            raise UnsafeStateError(
                f"the database upgrade from {self.db_version} to {self.target_version} failed"
                f" ({mask(failure, known_secrets(self.settings, self.layout))}); the database"
                f" was restored from {backup} (kept there)",
                "see onedb's output above; the next start retries the upgrade from the restored"
                f" state, or run {describe_image_for_db(self.db_version)} meanwhile",
            )
        if signals.name is not None:
            raise Interrupted(
                f"stopped by {signals.name} during the schema upgrade from {self.db_version}"
                f" to {self.target_version}: the upgrade finished within the grace (the"
                f" database is now at {self.target_version}, the backup is kept at {backup});"
                " stopped before the hand-off to supervisord, the next start goes on from here")

    def _backup(self, log: Log) -> Path:
        """onerun's own backup; a failure changes nothing and refuses the start (exit 3)."""
        try:
            return make_backup(self.settings, self.layout, db_version=self.db_version,
                               target_version=self.target_version, log=log)
        except Interrupted:
            raise  # a signal during the backup: its partial file is gone, nothing changed
        except Exception as error:
            raise UnsafeStateError(
                f"could not back up the database before upgrading it from {self.db_version}"
                f" to {self.target_version}: {error}; nothing was changed",
                f"fix the cause (space and permissions of {self.layout.backups}, the MariaDB"
                " client tools) and restart; or run "
                f"{describe_image_for_db(self.db_version)} meanwhile",
            ) from error

    def _versions(self) -> str | None:
        """None when both versions now equal the target; otherwise what is wrong."""
        from onerun.database import classify

        observed = classify(self.settings, self.layout)
        target = Version.parse(self.target_version)
        for label, value in (("DB version", observed.db_version),
                             ("local DB version", observed.local_db_version)):
            if value is None:
                return f"after onedb upgrade the {label} cannot be read ({observed.detail})"
            try:
                same = Version.parse(value) == target
            except ValueError:
                same = False
            if not same:
                return (f"after onedb upgrade the {label} is {value},"
                        f" not {self.target_version}")
        return None

    def _put_back(self, ctx: ApplyContext, backup: Path, outcome: str, reason: str,
                  output: list[str]) -> None:
        """Log onedb's last lines and restore the backup; the marker goes once it is back.

        A restore that fails leaves the marker and raises UnsafeStateError (exit 3).
        """
        secrets = known_secrets(self.settings, self.layout)
        reason = mask(reason, secrets)
        ctx.log(f"the database upgrade from {self.db_version} to {self.target_version} {outcome}:"
                f" {reason}")
        if output:
            ctx.log(f"last {len(output)} lines of onedb's output:")
            for line in output:
                ctx.log(f"  onedb: {line}")
        try:
            restore_backup(self.settings, self.layout, backup, ctx.log)
        except Exception as error:
            why = mask(f"{type(error).__name__}: {error}", secrets)
            with contextlib.suppress(OSError):
                write_restore_failed_marker(
                    self.layout, backup,
                    f"upgrade from {self.db_version} to {self.target_version} {outcome}"
                    f" ({reason}) and restoring the backup failed too ({why})")
            raise UnsafeStateError(
                f"the database upgrade from {self.db_version} to {self.target_version} {outcome}"
                f" ({reason}) and restoring the backup {backup} failed ({why}); the database"
                " is in an unknown state and every start refuses until it is restored",
                f"start the pod with ONERUN_MAINTENANCE=1 and run `onerun restore {backup}`",
            ) from error
        self.layout.restore_failed_marker.unlink(missing_ok=True)
