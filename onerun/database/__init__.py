"""The database oned will use: wait until it answers, and classify what it holds.

Observing never writes: sqlite is opened read-only, MariaDB in a read-only session. The
one exception: an sqlite transaction a crash interrupted is rolled back, after a copy of
the files as found is kept (onerun/database/sqlite.py).
"""

from __future__ import annotations

from onerun.database.classify import DbObservation, DbState
from onerun.database.mysql import classify_mysql, mysql_connect
from onerun.database.sqlite import Recovery, classify_sqlite
from onerun.database.wait import wait_for_database
from onerun.layout import Layout
from onerun.settings import Settings

__all__ = ["DbObservation", "DbState", "classify", "mysql_connect", "wait_for_database"]


def classify(settings: Settings, layout: Layout, *, dry_run: bool = False,
             encrypted: bool = False) -> DbObservation:
    """The state of the configured database (reference 2.5); unreachable is never EMPTY.

    Raises DependencyUnavailable when MariaDB cannot be read, SettingsError when it denies
    DB_USER, UnsafeStateError when one.db exists but is not a readable sqlite database.
    ``dry_run``: an interrupted sqlite transaction is rolled back in a scratch copy only.
    ``encrypted``: also read a few encrypted attribute values (to try a ONE_KEY on).
    """
    if settings.db_backend == "mysql":
        return classify_mysql(settings, encrypted=encrypted)
    return classify_sqlite(layout.sqlite_db, Recovery(layout, dry_run=dry_run),
                           encrypted=encrypted)
