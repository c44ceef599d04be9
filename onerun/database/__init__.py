"""The database oned will use, behind one interface: wait for it, classify what it holds,
back it up and put a backup back, and tell onedb where it is.

``backend_for(settings)`` picks the ``Backend`` for DB_BACKEND once; code outside this
package asks it, never which backend is configured. Observing never writes: sqlite is
opened read-only, MariaDB in a read-only session. The one exception: an sqlite transaction a
crash interrupted is rolled back, after a copy of the files as found is kept
(onerun/database/sqlite.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from onerun.database.backends import MariaDB, Sqlite
from onerun.database.classify import DbObservation, DbState
from onerun.database.mysql import mysql_connect
from onerun.layout import Layout
from onerun.settings import DbBackend, Settings

__all__ = ["Backend", "DbObservation", "DbState", "backend_for", "classify", "mysql_connect",
           "wait_for_database"]

Log = Callable[[str], None]
Mask = Callable[[str], str]  # hides every known secret in a child's output


class Backend(Protocol):
    """Everything onerun does that differs between sqlite and MariaDB."""

    name: DbBackend  # DB_BACKEND as settings hold it
    # The database is a file on the volume (one.db), which oneadmin must own and write.
    stored_on_volume: bool

    def describe(self, settings: Settings, layout: Layout) -> str:
        """Where the database is, for the operator and the bootstrap record."""

    def wait(self, settings: Settings, log: Log) -> None:
        """Return once oned could connect; raise as ``wait_for_database`` says."""

    def classify(self, settings: Settings, layout: Layout, *, dry_run: bool,
                 encrypted: bool) -> DbObservation:
        """The state of the database, as ``classify`` says."""

    def dump(self, settings: Settings, layout: Layout, target: Path, *, db_version: str,
             target_version: str | None, mask: Mask, log: Log) -> None:
        """Write a whole, checked backup into ``target``, an empty 0600 file.

        Raises BackupError; any child output it quotes went through ``mask``.
        """

    def backup_problem(self, path: Path) -> str | None:
        """Why ``path`` is not a whole backup of this backend (said after its name), or None."""

    def restore(self, settings: Settings, layout: Layout, path: Path, *, mask: Mask) -> None:
        """Replace the database with the backup ``path`` (oned stopped); raises BackupError."""

    def onedb_options(self, settings: Settings, layout: Layout) -> list[str]:
        """onedb's options naming this database; never a secret."""

    def onedb_environment(self, settings: Settings) -> dict[str, str]:
        """What onedb needs in its environment to log in (the password, never in argv)."""


_BACKENDS: dict[DbBackend, Backend] = {"mysql": MariaDB(), "sqlite": Sqlite()}


def backend_for(settings: Settings) -> Backend:
    """The backend DB_BACKEND names."""
    return _BACKENDS[settings.db_backend]


def wait_for_database(settings: Settings, layout: Layout, log: Log) -> None:
    """Return once DB_USER can log in to MariaDB (or DB_NAME is merely missing); sqlite
    returns at once.

    Raises SettingsError when access stays denied past a short grace, DependencyUnavailable
    at the ONERUN_DB_WAIT_TIMEOUT deadline, Interrupted on SIGTERM/SIGINT. ``layout`` is
    accepted so every start step has one shape; no wait needs it.
    """
    del layout
    backend_for(settings).wait(settings, log)


def classify(settings: Settings, layout: Layout, *, dry_run: bool = False,
             encrypted: bool = False) -> DbObservation:
    """The state of the configured database (docs/database.md); unreachable is never EMPTY.

    Raises DependencyUnavailable when MariaDB cannot be read, SettingsError when it denies
    DB_USER, UnsafeStateError when one.db exists but is not a readable sqlite database.
    ``dry_run``: an interrupted sqlite transaction is rolled back in a scratch copy only.
    ``encrypted``: also read a few encrypted attribute values (to try a ONE_KEY on).
    """
    return backend_for(settings).classify(settings, layout, dry_run=dry_run,
                                          encrypted=encrypted)
