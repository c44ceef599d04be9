"""Observation: read-only facts about the volume, the database, the image and processes.

Nothing here writes. The database part waits for the server first (a dependency that is
not there yet is not an observation of "empty"), then classifies it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onerun.database import DbObservation, classify, wait_for_database
from onerun.fsutil import running_as_root
from onerun.layout import SERVICE_AUTH_FILES, Layout
from onerun.marker import StartRecord, read_start_record
from onerun.plan import STAMP_FILE
from onerun.processes import oned_running
from onerun.secret import Secret
from onerun.services import installed_services
from onerun.settings import Settings
from onerun.sshkeys import PRIVATE_KEY_NAMES
from onerun.versions import ImageVersions, read_image_versions


@dataclass(frozen=True)
class OwnedPath:
    """A path onerun manages, with its current owner (None when absent)."""

    path: Path
    uid: int | None
    gid: int | None
    mode: int | None

    @property
    def exists(self) -> bool:
        return self.uid is not None


def stat_path(path: Path) -> OwnedPath:
    try:
        status = path.lstat()
    except FileNotFoundError:
        return OwnedPath(path, None, None, None)
    return OwnedPath(path, status.st_uid, status.st_gid, status.st_mode & 0o7777)


@dataclass(frozen=True)
class VolumeFacts:
    """What /var/lib/one holds; O(1) in the size of the volume (no tree walks)."""

    var_lib_one: OwnedPath
    sqlite_db: OwnedPath  # oned's one.db (absent with MariaDB or before the first start)
    one_key: Secret | None
    one_auth_present: bool
    one_auth_password: Secret | None  # the password part of one_auth's first line
    service_auth_present: frozenset[str]
    serveradmin_auth: Secret | None  # content of a present service auth file (all are equal)
    secret_files: tuple[OwnedPath, ...]
    start_record: StartRecord | None
    restore_failed: str | None  # the recorded reason while the DB state is unknown
    remotes_present: bool
    remotes_release: str | None  # the release stamped into the remotes when onerun copied them
    ssh_private_key_present: bool
    ssh_config_present: bool


@dataclass(frozen=True)
class ImageFacts:
    versions: ImageVersions
    installed_services: frozenset[str]
    remotes_dist_present: bool
    ssh_config_dist_present: bool


@dataclass(frozen=True)
class ProcessFacts:
    lock_file_present: bool
    oned_running: str | None  # why an oned may still run on this volume; None: provably not
    running_as_root: bool
    var_lib_one_writable_by_oneadmin: bool
    sqlite_db_writable_by_oneadmin: bool


@dataclass(frozen=True)
class Observation:
    volume: VolumeFacts
    image: ImageFacts
    processes: ProcessFacts
    db: DbObservation


def _read_first_token(path: Path) -> Secret | None:
    """one_key as oned reads it: the file's first whitespace-separated token."""
    try:
        tokens = path.read_text(encoding="utf-8", errors="replace").split()
    except FileNotFoundError:
        return None
    return Secret(tokens[0]) if tokens else Secret("")


def _read_one_auth_password(path: Path) -> tuple[bool, Secret | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False, None
    first = text.splitlines()[0] if text else ""
    _, sep, password = first.partition(":")
    return True, Secret(password) if sep else None


def _restore_failed_reason(marker: Path) -> str | None:
    """The reason recorded by an upgrade that left the DB in an unknown state."""
    try:
        text = marker.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        backup = data.get("backup", "?")
        return f"{data.get('reason', 'unknown reason')} (backup: {backup})"
    except (ValueError, AttributeError):
        return f"{marker} exists but is unreadable"


def _first_content(paths: list[Path]) -> Secret | None:
    """The first of ``paths`` holding ``user:secret`` (a service auth file), as a Secret."""
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8", errors="replace")
            if ":" in text.split("\n", 1)[0]:
                return Secret(text)
    return None


def _stamp(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def observe_volume(layout: Layout) -> VolumeFacts:
    one_auth_present, one_auth_password = _read_one_auth_password(layout.one_auth)
    present = frozenset(
        name for name in SERVICE_AUTH_FILES if layout.service_auth(name).exists())
    secret_names = ("one_key", "one_auth", *SERVICE_AUTH_FILES)
    secret_files = tuple(
        fact for fact in (stat_path(layout.dot_one / name) for name in secret_names) if fact.exists
    )
    return VolumeFacts(
        var_lib_one=stat_path(layout.var_lib_one),
        sqlite_db=stat_path(layout.sqlite_db),
        one_key=_read_first_token(layout.one_key),
        one_auth_present=one_auth_present,
        one_auth_password=one_auth_password,
        service_auth_present=present,
        serveradmin_auth=_first_content([layout.service_auth(name) for name in sorted(present)]),
        secret_files=secret_files,
        start_record=read_start_record(layout.volume_marker),
        restore_failed=_restore_failed_reason(layout.restore_failed_marker),
        remotes_present=layout.remotes.is_dir(),
        remotes_release=_stamp(layout.remotes / STAMP_FILE),
        ssh_private_key_present=any((layout.ssh_dir / key).exists() for key in PRIVATE_KEY_NAMES),
        ssh_config_present=(layout.ssh_dir / "config").exists(),
    )


def observe_image(layout: Layout) -> ImageFacts:
    return ImageFacts(
        versions=read_image_versions(layout.opennebula_rb, layout.database_schema_rb),
        installed_services=installed_services(layout),
        remotes_dist_present=layout.remotes_dist.is_dir(),
        ssh_config_dist_present=layout.ssh_config_dist.is_file(),
    )


def observe_processes(layout: Layout) -> ProcessFacts:
    as_root = running_as_root()
    volume = layout.var_lib_one
    return ProcessFacts(
        lock_file_present=layout.lock_file.exists(),
        oned_running=oned_running(layout),
        running_as_root=as_root,
        # As root onerun gives the directory to oneadmin itself; as oneadmin (the chart's
        # default) this process is the one that must be able to write there.
        var_lib_one_writable_by_oneadmin=as_root
        or not volume.exists()
        or os.access(volume, os.W_OK | os.X_OK),
        sqlite_db_writable_by_oneadmin=as_root
        or not layout.sqlite_db.exists()
        or os.access(layout.sqlite_db, os.R_OK | os.W_OK),
    )


def observe(settings: Settings, layout: Layout, log: Callable[[str], None]) -> Observation:
    """Every fact the policy needs. Waits for a MariaDB server; never writes."""
    wait_for_database(settings, layout, log)
    return Observation(
        volume=observe_volume(layout),
        image=observe_image(layout),
        processes=observe_processes(layout),
        db=classify(settings, layout),
    )
