"""The volume's record of the last completed start (reference: runtime issue item 4).

Written once oned has answered on a bootstrapped database. It says two things: this
volume belongs to a cloud whose database was bootstrapped (so an EMPTY database later
means a lost or wrong database, not a new install), and which OpenNebula release last
ran here (so the remotes are refreshed after an image upgrade). Stdlib only.
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


def read_start_record(path: Path) -> StartRecord | None:
    """The record, or None when the volume has none (or it is unreadable garbage)."""
    try:
        data = json.loads(path.read_text())
        return StartRecord(
            opennebula_version=data.get("opennebula_version"),
            db_version=data.get("db_version"),
            recorded_at=float(data.get("recorded_at", 0)),
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return None


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
