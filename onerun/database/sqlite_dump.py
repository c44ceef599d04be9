"""Copy one.db into a backup and back into place (DB_BACKEND=sqlite).

The copy uses sqlite's online backup API, so it is consistent even while oned writes; every
copy is checked with ``PRAGMA integrity_check``. A restore writes a temp file beside one.db
and renames it over one.db, so one.db is never half-written.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from onerun.database.sqlite import SIDECARS, interrupted_transaction, recover
from onerun.errors import BackupError
from onerun.fsutil import chown_if_root, fsync_dir
from onerun.layout import Layout

Log = Callable[[str], None]


def integrity(path: Path) -> str:
    """sqlite's own verdict on a file: 'ok' or the first problems it lists."""
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as error:
        return str(error)
    return "; ".join(str(row[0]) for row in rows[:5])


def _copy(source: Path, target: Path) -> None:
    """The sqlite3 online backup API: a consistent copy even while oned writes."""
    with closing(sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)) as src, \
            closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def dump_sqlite(layout: Layout, target: Path, log: Log) -> None:
    """Copy one.db into ``target`` (already created 0600); after a crash inside a transaction,
    first keep the files and roll it back (onerun/database/sqlite.py), since a read-only
    source cannot."""
    db = layout.sqlite_db
    if not db.is_file():
        raise BackupError(f"{db} does not exist: there is nothing to back up")
    try:
        _copy(db, target)
    except sqlite3.Error as error:
        if not interrupted_transaction(db):
            raise BackupError(f"copying {db} failed: {error}") from error
        log(recover(db, layout))
        try:
            _copy(db, target)
        except sqlite3.Error as again:
            raise BackupError(f"copying {db} failed: {again}") from again
    verdict = integrity(target)
    if verdict != "ok":
        raise BackupError(f"the copy of {layout.sqlite_db} fails PRAGMA integrity_check: "
                          f"{verdict}")


def sqlite_backup_problem(path: Path) -> str | None:
    """Why ``path`` is not a sound sqlite backup (said after its name), or None."""
    verdict = integrity(path)
    return None if verdict == "ok" else f"fails PRAGMA integrity_check: {verdict}"


def restore_sqlite(layout: Layout, path: Path) -> None:
    """Copy into a temp file beside one.db, then rename over it: one.db is never half-written."""
    db = layout.sqlite_db
    db.parent.mkdir(parents=True, exist_ok=True)
    mode = db.stat().st_mode & 0o777 if db.exists() else 0o600
    fd, tmp_name = tempfile.mkstemp(prefix=".one.db.restore-", dir=db.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    account = layout.oneadmin
    try:
        _copy(path, tmp)
        os.chmod(tmp, mode)
        chown_if_root(tmp, account.uid, account.gid)
        # A journal or WAL left by the replaced file would be replayed into the new one.
        for suffix in SIDECARS:
            with contextlib.suppress(FileNotFoundError):
                db.with_name(db.name + suffix).unlink()
        tmp.replace(db)
        fsync_dir(db.parent)
    except sqlite3.Error as error:
        raise BackupError(f"copying {path} into place failed: {error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
