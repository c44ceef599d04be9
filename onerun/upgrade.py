"""The schema upgrade as one plan action: back up, ``onedb upgrade``, verify, or put it back.

oned never migrates by itself and refuses any DB version other than its own (reference
2.3), so an older DB must go through ``onedb upgrade`` with oned stopped. onedb run with
``--no-backup`` leaves a half-migrated schema when it fails, which is why onerun takes its
own backup first (onedb's own would put the MariaDB password on mysqldump's argv,
reference 2.4) and restores it on any failure. oned is never started after a failure:
``apply`` raises UnsafeStateError (exit 3), which stops the start pipeline before
supervisord.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onerun.backup import (
    known_secrets,
    make_backup,
    mask,
    restore_backup,
    write_restore_failed_marker,
)
from onerun.errors import UnsafeStateError
from onerun.fsutil import running_as_root
from onerun.layout import Layout
from onerun.plan import ApplyContext
from onerun.settings import Settings
from onerun.versions import Version

ONEDB = "/usr/bin/onedb"
OUTPUT_LINES = 20
_PATH = "/usr/local/bin:/usr/bin:/bin"


def describe_image_for_db(db_version: str) -> str:
    """Which image runs a DB of this version: expected DB versions are per minor release."""
    try:
        series = Version.parse(db_version).minor_series
    except ValueError:
        return f"an image whose OpenNebula expects DB version {db_version}"
    return f"an image of OpenNebula {series}.x (it expects DB version {db_version})"


def onedb_command(settings: Settings, layout: Layout) -> list[str]:
    """``onedb upgrade --no-backup`` with explicit connection options and no password.

    Explicit options stop onedb from parsing oned.conf through Augeas (reference 2.4);
    the password reaches it only through ONE_DB_PASSWORD.
    """
    command = [str(layout.binary(ONEDB)), "upgrade", "--no-backup"]
    if settings.db_backend == "sqlite":
        return [*command, "-s", str(layout.sqlite_db)]
    host = settings.db_host or "localhost"
    return [*command, "-t", "mysql", "-S", host, "-P", str(settings.db_port),
            "-u", settings.db_user, "-d", settings.db_name]


def onedb_environment(settings: Settings, layout: Layout) -> dict[str, str]:
    """A minimal environment; ONE_DB_PASSWORD is onedb's documented way to get the password."""
    env = {"HOME": str(layout.var_lib_one), "PATH": _PATH, "LANG": "C.UTF-8",
           "ONE_AUTH": str(layout.one_auth), "USER": layout.oneadmin.name,
           "LOGNAME": layout.oneadmin.name}
    if settings.db_backend == "mysql" and settings.db_password is not None:
        env["ONE_DB_PASSWORD"] = settings.db_password.reveal()
    return env


@dataclass(frozen=True)
class OnedbResult:
    returncode: int
    output: list[str]  # the last OUTPUT_LINES lines, secrets already masked


def run_onedb(settings: Settings, layout: Layout) -> OnedbResult:
    """Run onedb as oneadmin (dropping privileges when root) and keep its last lines masked."""
    account = layout.oneadmin
    secrets = known_secrets(settings, layout)
    as_user: dict[str, Any] = {}
    if running_as_root():
        as_user = {"user": account.uid, "group": account.gid, "extra_groups": []}
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
    with subprocess.Popen(
        onedb_command(settings, layout), env=onedb_environment(settings, layout),
        cwd=layout.var_lib_one, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, **as_user,
    ) as process:
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                tail.append(mask(raw.decode(errors="replace").rstrip("\n"), secrets))
            returncode = process.wait()
        finally:
            if process.poll() is None:  # interrupted: never leave onedb migrating alone
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    return OnedbResult(returncode, list(tail))


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
                      " | on failure: restore the backup, keep it, exit 3"),
        }

    def apply(self, ctx: ApplyContext) -> None:
        log = ctx.log
        try:
            backup = make_backup(self.settings, self.layout, db_version=self.db_version,
                                 target_version=self.target_version, log=log)
        except Exception as error:
            raise UnsafeStateError(
                f"could not back up the database before upgrading it from {self.db_version}"
                f" to {self.target_version}: {error}; nothing was changed",
                f"fix the cause (space and permissions of {self.layout.backups}, the MariaDB"
                " client tools) and restart; or run "
                f"{describe_image_for_db(self.db_version)} meanwhile",
            ) from error
        write_restore_failed_marker(
            self.layout, backup,
            f"upgrade from {self.db_version} to {self.target_version} started and did not"
            " finish (interrupted): the database may be half-migrated")
        log(f"upgrading the database from {self.db_version} to {self.target_version} with"
            " onedb upgrade (can take a while on a large database)")
        output: list[str] = []
        failure: str | None
        try:
            result = run_onedb(self.settings, self.layout)
            output = result.output
            if result.returncode != 0:
                failure = f"onedb upgrade exited {result.returncode}"
            else:
                failure = self._versions()
        except Exception as error:  # whatever went wrong, the backup goes back
            failure = f"{type(error).__name__}: {error}"
        if failure is not None:
            self._fail(ctx, backup, failure, output)
        self.layout.restore_failed_marker.unlink(missing_ok=True)
        log(f"upgraded the database to {self.target_version}; the backup is kept at {backup}")

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

    def _fail(self, ctx: ApplyContext, backup: Path, reason: str, output: list[str]) -> None:
        """Log onedb's last lines, restore the backup, raise UnsafeStateError (exit 3)."""
        secrets = known_secrets(self.settings, self.layout)
        reason = mask(reason, secrets)
        ctx.log(f"the database upgrade from {self.db_version} to {self.target_version} failed:"
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
                    f"upgrade from {self.db_version} to {self.target_version} failed ({reason})"
                    f" and restoring the backup failed too ({why})")
            raise UnsafeStateError(
                f"the database upgrade from {self.db_version} to {self.target_version} failed"
                f" ({reason}) and restoring the backup {backup} failed ({why}); the database"
                " is in an unknown state and every start refuses until it is restored",
                f"start the pod with ONERUN_MAINTENANCE=1 and run `onerun restore {backup}`",
            ) from error
        self.layout.restore_failed_marker.unlink(missing_ok=True)
        raise UnsafeStateError(
            f"the database upgrade from {self.db_version} to {self.target_version} failed"
            f" ({reason}); the database was restored from {backup} (kept there)",
            "see onedb's output above; the next start retries the upgrade from the restored"
            f" state, or run {describe_image_for_db(self.db_version)} meanwhile",
        )
