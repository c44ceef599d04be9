"""The two backends behind the ``Backend`` interface (onerun/database/__init__.py).

Each class only routes to the modules that do the work: mysql.py, mysql_dump.py and wait.py
for MariaDB; sqlite.py and sqlite_dump.py for sqlite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from onerun.database.classify import DbObservation
from onerun.database.mysql import classify_mysql
from onerun.database.mysql_dump import dump_mysql, mysql_backup_problem, restore_mysql
from onerun.database.sqlite import Recovery, classify_sqlite
from onerun.database.sqlite_dump import dump_sqlite, restore_sqlite, sqlite_backup_problem
from onerun.database.wait import wait_for_mysql
from onerun.layout import Layout
from onerun.settings import DbBackend, Settings

Log = Callable[[str], None]
Mask = Callable[[str], str]


class MariaDB:
    """DB_BACKEND=mysql: DB_NAME on a MariaDB (or MySQL) server, reached over TCP."""

    name: DbBackend = "mysql"
    stored_on_volume = False

    def describe(self, settings: Settings, layout: Layout) -> str:
        return f"{settings.db_name} on {settings.db_host}:{settings.db_port}"

    def wait(self, settings: Settings, log: Log) -> None:
        wait_for_mysql(settings, log)

    def classify(self, settings: Settings, layout: Layout, *, dry_run: bool,
                 encrypted: bool) -> DbObservation:
        return classify_mysql(settings, encrypted=encrypted)

    def dump(self, settings: Settings, layout: Layout, target: Path, *, db_version: str,
             target_version: str | None, mask: Mask, log: Log) -> None:
        dump_mysql(settings, target, db_version=db_version, target_version=target_version,
                   mask=mask)

    def backup_problem(self, path: Path) -> str | None:
        return mysql_backup_problem(path)

    def restore(self, settings: Settings, layout: Layout, path: Path, *, mask: Mask) -> None:
        restore_mysql(settings, path, mask=mask)

    def onedb_options(self, settings: Settings, layout: Layout) -> list[str]:
        """Every connection option given, so onedb does not parse oned.conf (through
        Augeas, src/onedb/onedb.rb in OpenNebula/one); no password among them."""
        host = settings.db_host or "localhost"
        return ["-t", "mysql", "-S", host, "-P", str(settings.db_port),
                "-u", settings.db_user, "-d", settings.db_name]

    def onedb_environment(self, settings: Settings) -> dict[str, str]:
        """ONE_DB_PASSWORD: how onedb takes the password without argv (src/onedb/onedb)."""
        if settings.db_password is None:
            return {}
        return {"ONE_DB_PASSWORD": settings.db_password.reveal()}


class Sqlite:
    """DB_BACKEND=sqlite: /var/lib/one/one.db on the volume."""

    name: DbBackend = "sqlite"
    stored_on_volume = True

    def describe(self, settings: Settings, layout: Layout) -> str:
        return str(layout.sqlite_db)

    def wait(self, settings: Settings, log: Log) -> None:
        """A file needs no waiting for."""

    def classify(self, settings: Settings, layout: Layout, *, dry_run: bool,
                 encrypted: bool) -> DbObservation:
        return classify_sqlite(layout.sqlite_db, Recovery(layout, dry_run=dry_run),
                               encrypted=encrypted)

    def dump(self, settings: Settings, layout: Layout, target: Path, *, db_version: str,
             target_version: str | None, mask: Mask, log: Log) -> None:
        dump_sqlite(layout, target, log)

    def backup_problem(self, path: Path) -> str | None:
        return sqlite_backup_problem(path)

    def restore(self, settings: Settings, layout: Layout, path: Path, *, mask: Mask) -> None:
        restore_sqlite(layout, path)

    def onedb_options(self, settings: Settings, layout: Layout) -> list[str]:
        return ["-s", str(layout.sqlite_db)]

    def onedb_environment(self, settings: Settings) -> dict[str, str]:
        return {}
