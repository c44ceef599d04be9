"""onerun's records on the volume: the last completed start, and a bootstrap it began.

``last-start.json`` is written once oned has answered on a bootstrapped database. It says
two things: this volume belongs to a cloud whose database was bootstrapped (so an EMPTY
database later means a lost or wrong database, not a new install), and which OpenNebula
release last ran here (so the remotes are refreshed after an image upgrade). Only an absent
file means "no completed start": a damaged one still says the volume ran a cloud.

``bootstrap-started.json`` is written by a start that hands a first bootstrap to oned,
before anything else is written. A later start that finds leftovers of a bootstrap (one_key,
service auth files, an SSH key) knows they are its own only through it. Stdlib only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from onerun.fsutil import atomic_write


@dataclass(frozen=True)
class StartRecord:
    opennebula_version: str | None
    db_version: str | None
    recorded_at: float
    unreadable: str | None = None  # why the file could not be read; it counts all the same


def _unreadable(path: Path, why: object) -> StartRecord:
    return StartRecord(None, None, 0.0, unreadable=f"{path} is unreadable ({why})")


def read_start_record(path: Path) -> StartRecord | None:
    """The record; None only when the file does not exist (an unreadable one still counts)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return _unreadable(path, error)
    try:
        data = json.loads(text)
        return StartRecord(
            opennebula_version=data.get("opennebula_version"),
            db_version=data.get("db_version"),
            recorded_at=float(data.get("recorded_at", 0)),
        )
    except (ValueError, TypeError, AttributeError) as error:
        return _unreadable(path, f"not a record onerun wrote: {error}")


def write_start_record(
    path: Path, opennebula_version: str | None, db_version: str | None, uid: int, gid: int
) -> None:
    """Record a completed start atomically, owned by oneadmin."""
    payload = {
        "opennebula_version": opennebula_version,
        "db_version": db_version,
        "recorded_at": time.time(),
    }
    atomic_write(path, (json.dumps(payload, indent=2) + "\n").encode(), 0o644, uid, gid)


def bootstrap_record(database: str) -> bytes:
    """The content of bootstrap-started.json: which database onerun handed to oned."""
    return (json.dumps({"bootstrap": "started by onerun start", "database": database},
                       indent=2) + "\n").encode()
