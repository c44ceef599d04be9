"""Read an sqlite one.db (read-only URI, stdlib sqlite3), and recover it after a crash.

Reading never creates or changes the file. The one exception is a transaction that a
crash interrupted: its ``one.db-journal`` (or ``-wal``) must be rolled back before anyone
can read the database, and a read-only connection cannot do that (sqlite reports
SQLITE_READONLY_ROLLBACK, "attempt to write a readonly database"). oned would roll it back
itself on its first read; onerun must classify the database first. So, only when a
read-only read fails and such a file is present, and provably no oned runs: the files are
copied as found into a dated directory in onerun's backup directory, then one read-write
connection lets sqlite roll the transaction back, then the database is read again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from onerun.database.classify import (
    SLAVE_QUERY,
    USERS_QUERY,
    VERSION_QUERY,
    DbObservation,
    DbState,
    Facts,
    decide,
    encrypted_value_queries,
    is_true,
    values_at,
)
from onerun.errors import UnsafeStateError
from onerun.fsutil import chown_if_root, ensure_private_dir, running_as_root
from onerun.layout import Layout
from onerun.processes import oned_running

# Files sqlite keeps beside a database while a transaction is open (or, for WAL, always).
SIDECARS = ("-journal", "-wal", "-shm")
CRASH_COPY_PREFIX = "-crash-"  # one.db-crash-20261127T120000Z-<id> in layout.backups
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def _version(connection: sqlite3.Connection, table: str, tables: frozenset[str]) -> str | None:
    """oned's own query; an error or no row means "needs bootstrap" to oned
    (``check_db_version`` in src/nebula/SystemDB.cc, OpenNebula/one)."""
    if table not in tables:
        return None
    try:
        row = connection.execute(VERSION_QUERY.format(table=table)).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else str(row[0])


def _read(path: Path, where: str, encrypted: bool = False) -> Facts:
    """The readings classify needs, through a read-only connection; sqlite3.Error on failure.

    ``encrypted``: also a few encrypted attribute values (onerun/onekey.py tries a key).
    """
    uri = path.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        tables = frozenset(
            str(row[0]) for row in
            connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        )
        db_version = _version(connection, "db_versioning", tables)
        local_db_version = _version(connection, "local_db_versioning", tables)
        users: dict[int, str | None] = {}
        if "user_pool" in tables:
            for oid, body in connection.execute(USERS_QUERY):
                users[int(oid)] = None if body is None else str(body)
        is_slave = False
        if local_db_version is not None:
            row = connection.execute(SLAVE_QUERY).fetchone()
            is_slave = row is not None and is_true(row[0])
        values: list[str] = []
        for query, paths in encrypted_value_queries(tables) if encrypted else ():
            for (body,) in connection.execute(query):
                values.extend(values_at(None if body is None else str(body), paths))
    return Facts(
        where=where, tables=tables, db_version=db_version, local_db_version=local_db_version,
        user0_body=(users[0] or "") if 0 in users else None,
        user1_body=(users[1] or "") if 1 in users else None, is_slave=is_slave,
        encrypted_values=tuple(values),
    )


def unreadable(where: str, error: BaseException) -> UnsafeStateError:
    """The refusal for a file sqlite cannot read; the advice never loses the file."""
    return UnsafeStateError(
        f"{where} cannot be read as an sqlite database ({error})",
        "check that the file is OpenNebula's one.db and that oneadmin can read and write it;"
        " if it is damaged, start in maintenance mode (ONERUN_MAINTENANCE=1) and restore one"
        " of onerun's backups (`onerun restore FILE`); onerun leaves the file as it is",
    )


def read_facts(path: Path, where: str | None = None, encrypted: bool = False) -> Facts:
    """Collect the readings classify needs; the file is opened read-only (mode=ro)."""
    where = where or str(path)
    try:
        return _read(path, where, encrypted)
    except sqlite3.Error as error:
        raise unreadable(where, error) from error


def interrupted_transaction(path: Path) -> list[Path]:
    """The non-empty ``-journal``/``-wal`` beside ``path``: what a crash mid-write leaves."""
    found = []
    for suffix in SIDECARS[:2]:
        sidecar = path.with_name(path.name + suffix)
        with contextlib.suppress(OSError):
            if sidecar.stat().st_size > 0:
                found.append(sidecar)
    return found


def _present(path: Path) -> list[Path]:
    """``path`` and every sidecar beside it, as they are now."""
    return [path] + [p for p in (path.with_name(path.name + s) for s in SIDECARS) if p.exists()]


def _crash_copy_name(path: Path, sidecars: list[Path]) -> str:
    """one.db-crash-<UTC time of the newest sidecar>-<id>; the same files give the same name,
    so a start that is repeated (e.g. the roll-back keeps failing) keeps one copy only."""
    states = [p.stat() for p in sidecars]
    newest = max(state.st_mtime for state in states)
    identity = "".join(f"{p.name}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns};"
                       for p, s in zip(sidecars, states, strict=True))
    stamp = datetime.fromtimestamp(newest, UTC).strftime(_STAMP_FORMAT)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{path.name}{CRASH_COPY_PREFIX}{stamp}-{digest}"


def _copy_private(source: Path, target: Path, uid: int, gid: int) -> None:
    """Copy into a new 0600 file (never world-readable, even for a moment), owned uid:gid."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())
    chown_if_root(target, uid, gid)


def keep_aside(path: Path, layout: Layout) -> Path:
    """Copy one.db and its sidecars, as found, into layout.backups/one.db-crash-<time>-<id>.

    The directory is 0700, the files 0600, all owned like one.db; it is written under a
    dot-name and renamed once complete. A copy of the same files made before is reused.
    Raises UnsafeStateError (nothing changed) when the copy cannot be made.
    """
    sidecars = interrupted_transaction(path)
    target = layout.backups / _crash_copy_name(path, sidecars)
    if target.is_dir():
        return target
    owner = path.stat()
    partial = layout.backups / f".{target.name}.partial"
    try:
        account = layout.oneadmin
        ensure_private_dir(layout.backups, account.uid, account.gid)
        if partial.exists():  # a dot-name only this function makes: an interrupted copy
            shutil.rmtree(partial)
        partial.mkdir(mode=0o700)
        for source in _present(path):
            _copy_private(source, partial / source.name, owner.st_uid, owner.st_gid)
        chown_if_root(partial, owner.st_uid, owner.st_gid)
        partial.rename(target)
    except OSError as error:
        with contextlib.suppress(OSError):
            shutil.rmtree(partial)
        size = sum(p.stat().st_size for p in _present(path)) // (1024 * 1024) + 1
        raise UnsafeStateError(
            f"{path} holds a transaction a crash interrupted "
            f"({', '.join(p.name for p in sidecars)}), and onerun could not keep a copy of the "
            f"files before letting sqlite roll it back ({error}); nothing was changed",
            f"make room in {layout.backups} (about {size} MiB) or let oneadmin write there, "
            "then start again",
        ) from error
    return target


def _roll_back(path: Path) -> None:
    """One read-write connection and one read: sqlite rolls back a hot journal (or recovers
    a WAL) on the first read, and removes the journal when done."""
    owner = path.stat()
    try:
        uri = path.resolve().as_uri() + "?mode=rw"
        with closing(sqlite3.connect(uri, uri=True)) as connection:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        if running_as_root():  # e.g. a WAL's -shm created now belongs to one.db's owner
            for sidecar in _present(path)[1:]:
                with contextlib.suppress(OSError):
                    os.chown(sidecar, owner.st_uid, owner.st_gid, follow_symlinks=False)


def recover(path: Path, layout: Layout) -> str:
    """Keep the files of an interrupted transaction aside, then let sqlite roll it back.

    Returns a sentence for the operator. Raises UnsafeStateError, changing nothing, when an
    oned may still run (its journal is not hot: the transaction is alive) or the copy fails.
    """
    sidecars = interrupted_transaction(path)
    names = ", ".join(p.name for p in sidecars)
    busy = oned_running(layout)
    if busy is not None:
        raise UnsafeStateError(
            f"{path} has an unfinished transaction ({names}) and an oned may still run on "
            f"this volume: {busy}",
            "stop that oned first; the next start keeps a copy of the files and lets sqlite "
            "roll the transaction back",
        )
    kept = keep_aside(path, layout)
    try:
        _roll_back(path)
    except sqlite3.Error as error:
        raise UnsafeStateError(
            f"{path} holds a transaction a crash interrupted ({names}) and sqlite could not "
            f"roll it back ({error}); the files as found are kept in {kept}",
            "check the file with `sqlite3 one.db 'PRAGMA integrity_check'` as oneadmin, or "
            "start in maintenance mode (ONERUN_MAINTENANCE=1) and restore one of onerun's "
            "backups (`onerun restore FILE`)",
        ) from error
    return (f"an interrupted transaction ({names}) was rolled back; the files as found are "
            f"kept in {kept}")


def _classify_rolled_back_copy(path: Path, layout: Layout,
                               encrypted: bool) -> tuple[Facts, str]:
    """Dry run: roll back a private scratch copy only; the volume stays as it is."""
    names = ", ".join(p.name for p in interrupted_transaction(path))
    busy = oned_running(layout)
    if busy is not None:
        raise UnsafeStateError(
            f"{path} has an unfinished transaction ({names}) and an oned may still run on "
            f"this volume: {busy}", "stop that oned first")
    with tempfile.TemporaryDirectory(prefix="onerun-dry-run-") as scratch:
        for source in _present(path):
            shutil.copyfile(source, Path(scratch) / source.name)
        copy = Path(scratch) / path.name
        try:
            _roll_back(copy)
        except sqlite3.Error as error:
            raise unreadable(str(path), error) from error
        facts = read_facts(copy, where=str(path), encrypted=encrypted)
    return facts, (
        f"an interrupted transaction ({names}) is rolled back by the real start, after it "
        f"copies the files as found into {layout.backups}/{path.name}{CRASH_COPY_PREFIX}<time>"
        " (dry run: classified a rolled-back scratch copy)")


@dataclass(frozen=True)
class Recovery:
    """Whether, and how, classification may recover an interrupted transaction."""

    layout: Layout
    dry_run: bool = False


def classify_sqlite(path: Path, recovery: Recovery | None = None, *,
                    encrypted: bool = False) -> DbObservation:
    """Classify one.db; an absent file is EMPTY (oned creates it).

    Without ``recovery`` nothing is ever written; with it, an interrupted transaction is
    recovered as the module says (in a scratch copy for a dry run). ``encrypted``: also
    read a few encrypted attribute values.
    """
    if not path.exists():
        return DbObservation(
            state=DbState.EMPTY, db_version=None, local_db_version=None,
            oneadmin_password_sha256=None, oneadmin_name=None, serveradmin_present=False,
            is_slave=False, tables=frozenset(), detail=f"{path} does not exist",
        )
    try:
        return decide(_read(path, str(path), encrypted))
    except sqlite3.Error as error:
        if recovery is None or not interrupted_transaction(path):
            raise unreadable(str(path), error) from error
    if recovery.dry_run:
        facts, note = _classify_rolled_back_copy(path, recovery.layout, encrypted)
    else:
        note = recover(path, recovery.layout)
        facts = read_facts(path, encrypted=encrypted)
    observation = decide(facts)
    return dataclasses.replace(observation, detail=f"{observation.detail}; {note}",
                               recovery=note)
