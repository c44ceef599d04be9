"""oned.conf in a zone: FEDERATION/SERVER_ID and the Raft timers (share/etc/oned.conf@7.4).

Raft HA runs with MODE STANDALONE and ZONE_ID 0; SERVER_ID -1 is solo (the founder's first
boot: oned refuses to bootstrap a DB with SERVER_ID >= 0, src/nebula/Nebula.cc@7.4), the ID
the zone assigned otherwise. The timers are onerun's settings (docs/ha.md has the measured
failover times); other RAFT keys (LOG_RETENTION, ...) stay ONERUN_CONFIG's.
"""

from __future__ import annotations

from onerun.config import oneconf
from onerun.settings import HaSettings

SOLO = -1


def apply_zone(document: oneconf.Document, ha: HaSettings, server_id: int | None) -> None:
    """Set this member's FEDERATION and RAFT; ``server_id`` None: not known yet (solo)."""
    document.merge_vector("FEDERATION", {
        "MODE": "STANDALONE", "ZONE_ID": 0,
        "SERVER_ID": SOLO if server_id is None else server_id,
    })
    document.merge_vector("RAFT", {
        "ELECTION_TIMEOUT_MS": ha.election_timeout_ms,
        "BROADCAST_TIMEOUT_MS": ha.broadcast_timeout_ms,
    })
