"""Backups onerun makes itself, restoring them, pruning them; ``onerun backup`` / ``restore``.

Why onerun and not ``onedb backup``: onedb puts the MariaDB password on mysqldump's
command line and prints it when the dump fails (``backup`` in src/onedb/onedb_backend.rb,
OpenNebula/one). How each backend is dumped and restored lives in onerun/database/ (the
``Backend`` interface); this module names, lists, prunes and checks the files, whatever
the backend. Backups live on the volume in ``/var/lib/one/backups`` under names only onerun
makes, so pruning never touches anything else:

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from onerun.errors import EXIT_REFUSED, OnerunError
from onerun.fsutil import chown_if_root, ensure_private_dir, fsync_dir
from onerun.layout import Layout
from onerun.processes import oned_running
from onerun.settings import Settings

Log = Callable[[str], None]

_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_VERSION = r"\d+(?:\.\d+)*"
BACKUP_NAME = re.compile(
    rf"^(?P<stem>opennebula|one\.db)-(?P<stamp>\d{{8}}T\d{{6}}Z)"
    rf"-db(?P<db>{_VERSION}|unknown)(?:-to(?P<to>{_VERSION}))?\.(?P<ext>sql|sqlite)$"
)
# Each backend's file stem and extension: a name says which backend made the file.
_STEMS: dict[str, tuple[str, str]] = {"mysql": ("opennebula", "sql"),
                                      "sqlite": ("one.db", "sqlite")}


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
    backend = next((backend for backend, stem_ext in _STEMS.items()
                    if stem_ext == (match["stem"], match["ext"])), None)
    if backend is None:
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


def _masker(settings: Settings, layout: Layout) -> Callable[[str], str]:
    """Masks every known secret in a child's output; the secrets are read only when used."""
    return lambda text: mask(text, known_secrets(settings, layout))


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


def make_backup(settings: Settings, layout: Layout, *, db_version: str,
                target_version: str | None = None, log: Log) -> Path:
    """Back up the database into layout.backups (0600, oneadmin's), checked complete.

    Written under a dot-name and renamed only once verified, so a file with onerun's
    name is always a whole backup. Nothing is pruned here: the caller prunes once the
    whole operation succeeded (``prune_after_success``).
    """
    from onerun.database import backend_for

    backend = backend_for(settings)
    backups = _ensure_backup_dir(layout)
    name = backup_file_name(backend.name, _next_stamp(layout), db_version, target_version)
    final = backups / name
    partial = backups / f".{name}.partial"
    account = layout.oneadmin
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)
    try:
        # Into the empty 0600 file: the backup is never world-readable, even half-written.
        backend.dump(settings, layout, partial, db_version=db_version,
                     target_version=target_version, mask=_masker(settings, layout), log=log)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        chown_if_root(partial, account.uid, account.gid)
        partial.rename(final)
        fsync_dir(backups)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    log(f"backed up the database ({backend.name}, DB version {db_version}) to {final}"
        f" ({final.stat().st_size} bytes)")
    return final


def check_backup_file(settings: Settings, path: Path) -> BackupName:
    """Accept only a whole backup onerun made for this backend; raise RestoreRefused otherwise."""
    from onerun.database import backend_for

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
    problem = backend_for(settings).backup_problem(path)
    if problem is not None:
        raise RestoreRefused(f"{path} {problem}", fix)
    return parsed


def restore_backup(settings: Settings, layout: Layout, path: Path, log: Log) -> None:
    """Put one of onerun's backups back as the database (oned must be stopped).

    MariaDB: DB_NAME is dropped, recreated with its recorded charset and loaded with the
    ``mariadb`` client. sqlite: copied beside one.db and renamed over it.
    """
    from onerun.database import backend_for

    parsed = check_backup_file(settings, path)
    log(f"restoring {path} (DB version {parsed.db_version}, made"
        f" {parsed.stamp.strftime(_STAMP_FORMAT)})")
    backend_for(settings).restore(settings, layout, path, mask=_masker(settings, layout))
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
