"""Backups onerun makes itself, restoring them, pruning them; ``onerun backup`` / ``restore``.

Why onerun and not ``onedb backup``: onedb puts the MariaDB password on mysqldump's
command line and prints it when the dump fails (reference 2.4). Here the dump tools read
their credentials from a 0600 option file, and sqlite is copied with the sqlite3 backup
API (safe while oned writes). Backups live on the volume in ``/var/lib/one/backups`` under
names only onerun makes, so pruning never touches anything else:

    opennebula-20261127T120000Z-db7.0.0-to7.4.0.sql     (MariaDB, before an upgrade)
    one.db-20261127T120000Z-db7.0.0.sqlite               (sqlite, ``onerun backup``)

The ``-to<version>`` part is the kind: "upgrade" backups (made by ``onerun start`` before
``onedb upgrade``) have it, "manual" ones (``onerun backup``) do not. Each kind is pruned
on its own count, and only after a success: a failing start deletes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from onerun.errors import EXIT_REFUSED, OnerunError
from onerun.fsutil import chown_if_root, ensure_private_dir
from onerun.layout import Layout
from onerun.processes import oned_running
from onerun.settings import Settings

if TYPE_CHECKING:
    from pymysql.connections import Connection
    from pymysql.cursors import Cursor

Log = Callable[[str], None]

_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_VERSION = r"\d+(?:\.\d+)*"
BACKUP_NAME = re.compile(
    rf"^(?P<stem>opennebula|one\.db)-(?P<stamp>\d{{8}}T\d{{6}}Z)"
    rf"-db(?P<db>{_VERSION}|unknown)(?:-to(?P<to>{_VERSION}))?\.(?P<ext>sql|sqlite)$"
)
_STEMS = {"mysql": ("opennebula", "sql"), "sqlite": ("one.db", "sqlite")}
DUMP_TRAILER = "-- Dump completed"
ONERUN_TRAILER = "-- onerun-backup "
_TAIL_BYTES = 8192
_STDERR_LINES = 10


class BackupError(OnerunError):
    """A backup or restore could not be made; what exists is unchanged (restore: see text)."""


class RestoreRefused(OnerunError):
    """``onerun restore`` will not run: the file is not ours or oned still runs."""

    exit_code = EXIT_REFUSED

    def __init__(self, reason: str, fix: str) -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"refusing to restore: {reason}\n  fix: {fix}")


@dataclass(frozen=True)
class BackupName:
    """What a backup's file name says: when, which backend, which versions."""

    backend: str  # "mysql" | "sqlite"
    stamp: datetime
    db_version: str
    target_version: str | None

    @property
    def kind(self) -> str:
        """"upgrade" (made before a schema upgrade, automatically) or "manual"."""
        return "upgrade" if self.target_version else "manual"


def parse_backup_name(name: str) -> BackupName | None:
    """The parts of one of onerun's own backup names; None for any other file."""
    match = BACKUP_NAME.match(name)
    if match is None:
        return None
    backend = "mysql" if match["ext"] == "sql" else "sqlite"
    if _STEMS[backend][0] != match["stem"]:
        return None
    stamp = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=UTC)
    return BackupName(backend, stamp, match["db"], match["to"])


def backup_file_name(backend: str, stamp: datetime, db_version: str,
                     target_version: str | None) -> str:
    """The name onerun gives a backup; ``parse_backup_name`` reads it back."""
    stem, ext = _STEMS[backend]
    to = f"-to{target_version}" if target_version else ""
    return f"{stem}-{stamp.strftime(_STAMP_FORMAT)}-db{db_version}{to}.{ext}"


def list_backups(layout: Layout, kind: str | None = None) -> list[tuple[BackupName, Path]]:
    """onerun's backups (of ``kind``, or all) in layout.backups, oldest first; other files
    are ignored."""
    if not layout.backups.is_dir():
        return []
    found = []
    for path in layout.backups.iterdir():
        parsed = parse_backup_name(path.name)
        if (parsed is not None and kind in (None, parsed.kind) and path.is_file()
                and not path.is_symlink()):
            found.append((parsed, path))
    found.sort(key=lambda item: (item[0].stamp, item[1].name))
    return found


def prune_backups(layout: Layout, keep: int, *, kind: str) -> list[Path]:
    """Delete all but the newest ``keep`` of onerun's backups of ``kind``; return them."""
    if keep < 1:
        raise ValueError("keep must be at least 1: the newest backup is never deleted")
    backups = list_backups(layout, kind)
    removed = []
    for _, path in backups[: max(0, len(backups) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def prune_after_success(layout: Layout, kind: str, keep: int | None, setting: str,
                        log: Log) -> None:
    """Prune ``kind`` to ``keep`` (None: keep all) once a backup or an upgrade succeeded.

    Never called on a failure path: a crash loop must not eat the backups it needs. A file
    that cannot be removed is logged; it does not fail what already succeeded.
    """
    if keep is None:
        return
    try:
        for old in prune_backups(layout, keep, kind=kind):
            log(f"removed old backup {old} ({setting}={keep})")
    except OSError as error:
        log(f"could not remove old backups in {layout.backups} ({setting}={keep}): {error}")


def mask(text: str, secrets: list[str]) -> str:
    """Replace every secret (longest first) with *** in text meant for a log."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def known_secrets(settings: Settings, layout: Layout) -> list[str]:
    """Every secret a child's output could echo: DB and oneadmin passwords, one_key."""
    values = [s.reveal() for s in (settings.db_password, settings.oneadmin_password,
                                   settings.one_key) if s is not None]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        _, _, password = layout.one_auth.read_text().strip().partition(":")
        values.append(password)
    return values


def _tail(text: str, lines: int = _STDERR_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_backup_dir(layout: Layout) -> Path:
    """layout.backups, 0700 and oneadmin's: dumps hold every secret attribute of the cloud."""
    account = layout.oneadmin
    return ensure_private_dir(layout.backups, account.uid, account.gid)


def _next_stamp(layout: Layout) -> datetime:
    """Now (UTC, whole seconds), moved past the newest existing backup so names never clash."""
    now = datetime.now(UTC).replace(microsecond=0)
    existing = list_backups(layout)
    if existing and existing[-1][0].stamp >= now:
        return datetime.fromtimestamp(existing[-1][0].stamp.timestamp() + 1, UTC)
    return now


@contextlib.contextmanager
def client_defaults_file(settings: Settings) -> Iterator[Path]:
    """A 0600 option file with the connection and password for mariadb-dump / mariadb.

    ``--defaults-file`` (not ``--defaults-extra-file``) so no ~/.my.cnf or /etc/mysql
    setting can override the account; the password never appears in argv.
    """
    password = settings.db_password.reveal() if settings.db_password is not None else ""
    host = settings.db_host or "localhost"
    fd, name = tempfile.mkstemp(prefix="onerun-client-", suffix=".cnf")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # Quotes and backslashes are not allowed in DB_PASSWORD (settings), so a
            # double-quoted value is read back verbatim.
            handle.write(
                f'[client]\nuser="{settings.db_user}"\npassword="{password}"\n'
                f"host={host}\nport={settings.db_port}\nprotocol=tcp\n"
            )
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _client(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BackupError(
        f"none of {', '.join(names)} is installed; onerun needs the MariaDB client tools"
        " to back up and restore (apt-get install mariadb-client)"
    )


def _child_env() -> dict[str, str]:
    """The dump tools get no secret in their environment: the option file has it."""
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": tempfile.gettempdir()}


def _schema_charset(settings: Settings) -> tuple[str | None, str | None]:
    """DB_NAME's default charset and collation, recreated on restore (oned checks them)."""
    import pymysql

    from onerun.database import mysql_connect
    from onerun.database.mysql import describe

    try:
        connection: Connection[Cursor] = mysql_connect(settings, database=False)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
                    " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=%s", (settings.db_name,))
                row = cursor.fetchone()
        finally:
            connection.close()
    except pymysql.err.MySQLError as error:
        raise BackupError(f"cannot read database {settings.db_name}: {describe(error, settings)}"
                          ) from error
    return (str(row[0]), str(row[1])) if row else (None, None)


def _dump_mysql(settings: Settings, layout: Layout, target: Path, meta: dict[str, object]) -> None:
    """mariadb-dump DB_NAME into ``target`` (already created 0600), then check it complete."""
    charset, collation = _schema_charset(settings)
    dump = _client("mariadb-dump", "mysqldump")
    with client_defaults_file(settings) as defaults, target.open("ab") as out:
        # No --databases: the dump carries no CREATE DATABASE/USE, so restore recreates it
        # under DB_NAME with the charset recorded in the trailer.
        result = subprocess.run(
            [dump, f"--defaults-file={defaults}", "--single-transaction", "--routines",
             "--triggers", "--no-tablespaces", "--hex-blob", settings.db_name],
            stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_child_env(),
            check=False,
        )
    stderr = mask(result.stderr.decode(errors="replace"), known_secrets(settings, layout))
    if result.returncode != 0:
        raise BackupError(f"{Path(dump).name} exited {result.returncode}: {_tail(stderr)}")
    size = target.stat().st_size
    if size == 0 or DUMP_TRAILER not in _read_tail(target):
        raise BackupError(f"{Path(dump).name} wrote an incomplete dump ({size} bytes, no"
                          f" '{DUMP_TRAILER}' trailer): {_tail(stderr)}")
    trailer = {**meta, "database": settings.db_name, "charset": charset, "collation": collation}
    with target.open("a", encoding="utf-8") as out:
        out.write(f"{ONERUN_TRAILER}{json.dumps(trailer, sort_keys=True)}\n")


def _read_tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        return handle.read().decode(errors="replace")


def _integrity(path: Path) -> str:
    """sqlite's own verdict on a file: 'ok' or the first problems it lists."""
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as error:
        return str(error)
    return "; ".join(str(row[0]) for row in rows[:5])


def _copy_sqlite(source: Path, target: Path) -> None:
    """The sqlite3 online backup API: a consistent copy even while oned writes."""
    with closing(sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)) as src, \
            closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _dump_sqlite(layout: Layout, target: Path, log: Log) -> None:
    """Copy one.db; after a crash inside a transaction, first keep the files and roll it
    back (onerun/database/sqlite.py), since a read-only source cannot."""
    from onerun.database.sqlite import interrupted_transaction, recover

    db = layout.sqlite_db
    if not db.is_file():
        raise BackupError(f"{db} does not exist: there is nothing to back up")
    try:
        _copy_sqlite(db, target)
    except sqlite3.Error as error:
        if not interrupted_transaction(db):
            raise BackupError(f"copying {db} failed: {error}") from error
        log(recover(db, layout))
        try:
            _copy_sqlite(db, target)
        except sqlite3.Error as again:
            raise BackupError(f"copying {db} failed: {again}") from again
    verdict = _integrity(target)
    if verdict != "ok":
        raise BackupError(f"the copy of {layout.sqlite_db} fails PRAGMA integrity_check: "
                          f"{verdict}")


def make_backup(settings: Settings, layout: Layout, *, db_version: str,
                target_version: str | None = None, log: Log) -> Path:
    """Back up the database into layout.backups (0600, oneadmin's), checked complete.

    Written under a dot-name and renamed only once verified, so a file with onerun's
    name is always a whole backup. Nothing is pruned here: the caller prunes once the
    whole operation succeeded (``prune_after_success``).
    """
    backups = _ensure_backup_dir(layout)
    backend = settings.db_backend
    name = backup_file_name(backend, _next_stamp(layout), db_version, target_version)
    final = backups / name
    partial = backups / f".{name}.partial"
    account = layout.oneadmin
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)
    try:
        if backend == "mysql":
            meta: dict[str, object] = {"db_version": db_version, "target_version": target_version,
                                       "created": time.time()}
            _dump_mysql(settings, layout, partial, meta)
        else:
            _dump_sqlite(layout, partial, log)  # into the empty 0600 file: never world-readable
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        chown_if_root(partial, account.uid, account.gid)
        partial.rename(final)
        _fsync_dir(backups)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    log(f"backed up the database ({backend}, DB version {db_version}) to {final}"
        f" ({final.stat().st_size} bytes)")
    return final


def _onerun_trailer(path: Path) -> dict[str, object] | None:
    """The metadata line onerun appends to its MariaDB dumps; None if absent."""
    tail = _read_tail(path)
    if DUMP_TRAILER not in tail:
        return None
    for line in reversed(tail.splitlines()):
        if line.startswith(ONERUN_TRAILER):
            with contextlib.suppress(ValueError):
                data = json.loads(line[len(ONERUN_TRAILER):])
                return data if isinstance(data, dict) else None
    return None


def check_backup_file(settings: Settings, path: Path) -> BackupName:
    """Accept only a whole backup onerun made for this backend; raise RestoreRefused otherwise."""
    parsed = parse_backup_name(path.name)
    fix = ("pass one of onerun's backups from /var/lib/one/backups, named like"
           " opennebula-20261127T120000Z-db7.0.0-to7.4.0.sql or"
           " one.db-20261127T120000Z-db7.0.0.sqlite")
    if parsed is None:
        raise RestoreRefused(f"{path.name} is not named like a backup onerun made", fix)
    if not path.is_file():
        raise RestoreRefused(f"{path} does not exist or is not a file", fix)
    if parsed.backend != settings.db_backend:
        raise RestoreRefused(
            f"{path.name} is a {parsed.backend} backup but DB_BACKEND is {settings.db_backend}",
            "restore a backup made with the same DB_BACKEND")
    if parsed.backend == "mysql" and _onerun_trailer(path) is None:
        raise RestoreRefused(f"{path} lacks the trailer onerun writes after a complete dump"
                             " (truncated, or not made by onerun)", fix)
    if parsed.backend == "sqlite":
        verdict = _integrity(path)
        if verdict != "ok":
            raise RestoreRefused(f"{path} fails PRAGMA integrity_check: {verdict}", fix)
    return parsed


def _restore_mysql(settings: Settings, layout: Layout, path: Path) -> None:
    import pymysql

    from onerun.database import mysql_connect
    from onerun.database.mysql import describe

    trailer = _onerun_trailer(path) or {}
    charset, collation = trailer.get("charset"), trailer.get("collation")
    client = _client("mariadb", "mysql")
    name = settings.db_name  # validated by settings as a plain identifier
    create = f"CREATE DATABASE `{name}`"
    if isinstance(charset, str) and re.fullmatch(r"\w+", charset):
        create += f" CHARACTER SET {charset}"
    if isinstance(collation, str) and re.fullmatch(r"\w+", collation):
        create += f" COLLATE {collation}"
    try:
        connection: Connection[Cursor] = mysql_connect(settings, database=False)
        try:
            with connection.cursor() as cursor:
                # A clean database: tables a half-done migration added must not survive.
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cursor.execute(create)
        finally:
            connection.close()
    except pymysql.err.MySQLError as error:
        raise BackupError(f"cannot recreate database {name}: {describe(error, settings)}"
                          ) from error
    with client_defaults_file(settings) as defaults, path.open("rb") as dump:
        result = subprocess.run(
            [client, f"--defaults-file={defaults}", "--binary-mode", name],
            stdin=dump, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_child_env(),
            check=False,
        )
    if result.returncode != 0:
        output = mask(result.stdout.decode(errors="replace"), known_secrets(settings, layout))
        raise BackupError(f"{Path(client).name} exited {result.returncode} loading {path}:"
                          f" {_tail(output)}")


def _restore_sqlite(layout: Layout, path: Path) -> None:
    """Copy into a temp file beside one.db, then rename over it: one.db is never half-written."""
    db = layout.sqlite_db
    db.parent.mkdir(parents=True, exist_ok=True)
    mode = db.stat().st_mode & 0o777 if db.exists() else 0o600
    fd, tmp_name = tempfile.mkstemp(prefix=".one.db.restore-", dir=db.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    account = layout.oneadmin
    try:
        _copy_sqlite(path, tmp)
        os.chmod(tmp, mode)
        chown_if_root(tmp, account.uid, account.gid)
        # A journal or WAL left by the replaced file would be replayed into the new one.
        for suffix in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                db.with_name(db.name + suffix).unlink()
        tmp.replace(db)
        _fsync_dir(db.parent)
    except sqlite3.Error as error:
        raise BackupError(f"copying {path} into place failed: {error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def restore_backup(settings: Settings, layout: Layout, path: Path, log: Log) -> None:
    """Put one of onerun's backups back as the database (oned must be stopped).

    MariaDB: DB_NAME is dropped, recreated with its recorded charset and loaded with the
    ``mariadb`` client. sqlite: copied beside one.db and renamed over it.
    """
    parsed = check_backup_file(settings, path)
    log(f"restoring {path} (DB version {parsed.db_version}, made"
        f" {parsed.stamp.strftime(_STAMP_FORMAT)})")
    if parsed.backend == "mysql":
        _restore_mysql(settings, layout, path)
    else:
        _restore_sqlite(layout, path)
    log(f"restored the database from {path}")


def write_restore_failed_marker(layout: Layout, backup: Path, reason: str) -> None:
    """Record that the DB is in an unknown state; every start refuses until a restore."""
    from onerun.fsutil import atomic_write

    account = layout.oneadmin
    payload = {"backup": str(backup), "time": datetime.now(UTC).isoformat(), "reason": reason}
    if not layout.state_dir.is_dir():
        layout.state_dir.mkdir(mode=0o700, parents=True)
        chown_if_root(layout.state_dir, account.uid, account.gid)
    atomic_write(layout.restore_failed_marker, (json.dumps(payload, indent=2) + "\n").encode(),
                 0o600, account.uid, account.gid)


# --- onerun backup, onerun restore ------------------------------------------------------


def _size(size: int) -> str:
    """A size for people: bytes below 1 KiB, else KiB, MiB or GiB with one decimal."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def backup_listing(settings: Settings, layout: Layout) -> list[str]:
    """What ``onerun backup --list`` prints: a table, or one JSON object (ONERUN_LOG_FORMAT)."""
    found = []
    for parsed, path in list_backups(layout):
        with contextlib.suppress(FileNotFoundError):  # pruned meanwhile
            found.append((parsed, path, path.stat().st_size))
    if settings.log_format == "json":
        rows = [{"file": str(path), "kind": parsed.kind, "backend": parsed.backend,
                 "made": parsed.stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "size_bytes": size,
                 "db_version": parsed.db_version, "target_version": parsed.target_version}
                for parsed, path, size in found]
        return [json.dumps({"directory": str(layout.backups), "backups": rows,
                            "keep": {"upgrade": settings.backup_keep,
                                     "manual": settings.backup_keep_manual}})]
    lines = []
    if not found:
        lines.append(f"no backups in {layout.backups}")
    else:
        table = [("KIND", "MADE (UTC)", "SIZE", "DB", "TO")]
        table += [(parsed.kind, parsed.stamp.strftime("%Y-%m-%d %H:%M:%S"), _size(size),
                   parsed.db_version, parsed.target_version or "-")
                  for parsed, _, size in found]
        widths = [max(len(line[column]) for line in table) for column in range(5)]
        files = ["FILE", *(str(path) for _, path, _ in found)]
        for line, file in zip(table, files, strict=True):
            lines.append("  ".join([*(cell.ljust(width) for cell, width in zip(line, widths,
                                                                              strict=True)),
                                    file]))
    manual = (f"newest {settings.backup_keep_manual} (ONERUN_BACKUP_KEEP_MANUAL)"
              if settings.backup_keep_manual is not None
              else "all (ONERUN_BACKUP_KEEP_MANUAL is unset)")
    lines.append(f"kept: upgrade backups: newest {settings.backup_keep} (ONERUN_BACKUP_KEEP);"
                 f" manual backups: {manual}")
    return lines


def backup_now(settings: Settings, layout: Layout, log: Log) -> Path:
    """A manual backup of the database as it is now (safe while oned runs); then the manual
    backups are pruned to ONERUN_BACKUP_KEEP_MANUAL. Returns the new file."""
    from onerun.database import classify

    observed = classify(settings, layout)
    path = make_backup(settings, layout, db_version=observed.db_version or "unknown", log=log)
    prune_after_success(layout, "manual", settings.backup_keep_manual,
                        "ONERUN_BACKUP_KEEP_MANUAL", log)
    return path


def restore_stopped(settings: Settings, layout: Layout, path: Path, log: Log) -> None:
    """Restore ``path`` once oned is known to be stopped, then clear a failed-restore marker.

    Raises RestoreRefused while oned may be running: loading a dump under a live oned would
    mix its writes with the restored data.
    """
    busy = oned_running(layout)
    if busy:
        raise RestoreRefused(
            f"oned may be running: {busy}",
            "stop OpenNebula first: restart the pod with ONERUN_MAINTENANCE=1, then run"
            " `onerun restore FILE` in it")
    restore_backup(settings, layout, path, log)
    if layout.restore_failed_marker.exists():
        layout.restore_failed_marker.unlink()
        log(f"removed {layout.restore_failed_marker}: the database was restored")
