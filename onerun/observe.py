"""Observation: read-only facts about the volume, the database, the image and processes.

Nothing here writes. The database part waits for the server first (a dependency that is
not there yet is not an observation of "empty"), then classifies it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from onerun.catalogue import SERVICE_AUTH_FILES
from onerun.config import oneconf
from onerun.database import DbObservation, DbState, classify, wait_for_database
from onerun.errors import DependencyUnavailable, SettingsError, UnsafeStateError
from onerun.fsutil import running_as_root
from onerun.layout import Layout
from onerun.marker import StartRecord, read_start_record
from onerun.plan import STAMP_FILE
from onerun.processes import oned_running
from onerun.runtime.services import installed_services
from onerun.secret import Secret
from onerun.settings import Settings
from onerun.sshkeys import PRIVATE_KEY_NAMES
from onerun.versions import ImageVersions, Version, read_image_versions


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
    service_auth: Mapping[str, Secret]  # each present service auth file and its content
    secret_files: tuple[OwnedPath, ...]
    start_record: StartRecord | None  # unreadable counts: only an absent file is None
    bootstrap_started: bool  # onerun recorded that it handed a first bootstrap to oned
    datastores_with_content: tuple[str, ...]  # ids of datastore directories holding anything
    restore_failed: str | None  # the recorded reason while the DB state is unknown
    remotes_present: bool
    remotes_stamp: str | None  # what onerun stamped into the remotes when it copied them
    ssh_private_key_present: bool
    ssh_config_present: bool


@dataclass(frozen=True)
class ImageFacts:
    versions: ImageVersions
    installed_services: frozenset[str]
    remotes_dist_stamp: str | None  # identity of the image's remotes; None when absent
    ssh_config_dist_present: bool


@dataclass(frozen=True)
class ProcessFacts:
    lock_file_present: bool
    oned_running: str | None  # why an oned may still run on this volume; None: provably not
    running_as_root: bool
    var_lib_one_writable_by_oneadmin: bool
    sqlite_db_writable_by_oneadmin: bool


@dataclass(frozen=True)
class HostnameFact:
    """The name oned resolves at start, and whether it resolves here.

    oned looks up only the system hostname (gethostname + getaddrinfo with AI_CANONNAME),
    and only when oned.conf sets no HOSTNAME; failing that it exits
    (src/nebula/Nebula.cc@7.0 and @7.4, Nebula::start).
    """

    configured: str | None  # oned.conf's HOSTNAME once rendered: then nothing is looked up
    system: str  # gethostname()
    canonical: str | None  # what getaddrinfo answered, as oned would log it
    error: str | None  # why it did not resolve; None when it did (or was not looked up)


@dataclass(frozen=True)
class Observation:
    volume: VolumeFacts
    image: ImageFacts
    processes: ProcessFacts
    db: DbObservation
    hostname: HostnameFact | None = None  # None: not observed (policy table tests)


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


def _contents(paths: dict[str, Path]) -> dict[str, Secret]:
    """The content of each file that exists (an unreadable one counts, as empty)."""
    found = {}
    for name, path in paths.items():
        try:
            found[name] = Secret(path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            continue
        except OSError:
            found[name] = Secret("")
    return found


def _stamp(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _datastores_with_content(directory: Path) -> tuple[str, ...]:
    """The datastore directories that hold anything: one listing per datastore, no walk."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return ()
    found = []
    for entry in entries:
        try:
            if entry.is_dir():  # a datastore may be a symlink to a mount
                with os.scandir(entry.path) as inside:
                    if next(inside, None) is not None:
                        found.append(entry.name)
        except OSError:
            continue
    return tuple(found)


def observe_volume(layout: Layout) -> VolumeFacts:
    one_auth_present, one_auth_password = _read_one_auth_password(layout.one_auth)
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
        service_auth=_contents({name: layout.service_auth(name) for name in SERVICE_AUTH_FILES}),
        secret_files=secret_files,
        start_record=read_start_record(layout.volume_marker),
        bootstrap_started=layout.bootstrap_marker.exists(),
        datastores_with_content=_datastores_with_content(layout.datastores),
        restore_failed=_restore_failed_reason(layout.restore_failed_marker),
        remotes_present=layout.remotes.is_dir(),
        remotes_stamp=_stamp(layout.remotes / STAMP_FILE),
        ssh_private_key_present=any((layout.ssh_dir / key).exists() for key in PRIVATE_KEY_NAMES),
        ssh_config_present=(layout.ssh_dir / "config").exists(),
    )


def remotes_stamp(tree: Path, release: Version | None) -> str | None:
    """The image's remotes as a short identity: release plus a digest of the tree's listing.

    The listing (paths, sizes, mtimes) changes with any package revision of the drivers,
    even within one release. O(size of the image's remotes), never of the volume.
    """
    if not tree.is_dir():
        return None
    digest = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                status = os.lstat(path)
                digest.update(f"{os.path.relpath(path, tree)}\0{status.st_size}\0"
                              f"{int(status.st_mtime)}\n".encode())
    return f"{release or 'unknown'}+{digest.hexdigest()[:16]}"


def observe_image(layout: Layout) -> ImageFacts:
    versions = read_image_versions(layout.release_files(), layout.database_schema_rb)
    return ImageFacts(
        versions=versions,
        installed_services=installed_services(layout),
        remotes_dist_stamp=remotes_stamp(layout.remotes_dist, versions.release),
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


def _configured_hostname(settings: Settings, layout: Layout) -> str | None:
    """oned.conf's HOSTNAME as render.py will write it: the setting, the override, or the
    image's packaged value (commented out upstream)."""
    if settings.hostname:
        return settings.hostname
    override = next((value for key, value in settings.overrides.get("oned", {}).items()
                     if isinstance(key, str) and key.upper() == "HOSTNAME"), None)
    if override is not None:
        return str(override) or None
    try:
        packaged = oneconf.parse((layout.etc_dist / "oned.conf").read_text(
            encoding="utf-8", errors="surrogateescape")).get("HOSTNAME")
    except (OSError, oneconf.TemplateSyntaxError):
        return None  # rendering reports an unreadable etc-dist with its own fix
    return packaged if isinstance(packaged, str) and packaged else None


def resolve_canonical(name: str) -> str:
    """getaddrinfo(name) with AI_CANONNAME, as oned calls it; raises socket.gaierror."""
    answers = socket.getaddrinfo(name, None, socket.AF_UNSPEC, 0, 0, socket.AI_CANONNAME)
    return answers[0][3] or name


def observe_hostname(settings: Settings, layout: Layout) -> HostnameFact:
    """Look up what oned will look up at start (nothing when oned.conf sets HOSTNAME)."""
    configured = _configured_hostname(settings, layout)
    system = socket.gethostname()
    if configured is not None:
        return HostnameFact(configured, system, None, None)
    try:
        return HostnameFact(None, system, resolve_canonical(system), None)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else None
        return HostnameFact(None, system, None, reason or str(exc))


def _logged(db: DbObservation, log: Callable[[str], None]) -> DbObservation:
    """Say what recovering the database did: where the files as found are kept."""
    if db.recovery is not None:
        log(f"database: {db.recovery}")
    return db


# Maintenance mode must come up even when the DB is what is broken, so it waits less.
MAINTENANCE_DB_WAIT = 15.0


def observe(settings: Settings, layout: Layout, log: Callable[[str], None], *,
            dry_run: bool = False) -> Observation:
    """Every fact the policy needs. Waits for a MariaDB server; never writes, except to
    recover an sqlite transaction a crash interrupted (not in a dry run; database/sqlite.py).
    The database is read last: what the volume held before any recovery is what counts."""
    volume = observe_volume(layout)
    image = observe_image(layout)
    processes = observe_processes(layout)
    hostname = observe_hostname(settings, layout)
    return Observation(volume=volume, image=image, processes=processes,
                       db=observe_database(settings, layout, log, dry_run=dry_run),
                       hostname=hostname)


def observe_database(settings: Settings, layout: Layout, log: Callable[[str], None], *,
                     dry_run: bool = False) -> DbObservation:
    """Wait for the DB and classify it. An unreachable or unreadable DB ends the start
    (exit 4, 2 or 3), except in maintenance mode, where it is reported as UNREADABLE so an
    operator can still get in and restore it."""
    # ONE_KEY for a volume without a key: the policy must be able to try it (policy._one_key)
    on_volume = _read_first_token(layout.one_key)
    encrypted = settings.one_key is not None and (on_volume is None or not on_volume.reveal())
    if not settings.maintenance:
        wait_for_database(settings, layout, log)
        return _logged(classify(settings, layout, dry_run=dry_run, encrypted=encrypted), log)
    quick = dataclasses.replace(
        settings, db_wait_timeout=min(settings.db_wait_timeout, MAINTENANCE_DB_WAIT))
    try:
        wait_for_database(quick, layout, log)
        return _logged(classify(quick, layout, dry_run=dry_run, encrypted=encrypted), log)
    except (DependencyUnavailable, SettingsError, UnsafeStateError) as exc:
        return DbObservation(
            state=DbState.UNREADABLE, db_version=None, local_db_version=None,
            oneadmin_password_sha256=None, oneadmin_name=None, serveradmin_present=False,
            is_slave=False, tables=frozenset(), detail=" ".join(str(exc).split()))
