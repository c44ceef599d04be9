"""oned.conf in a zone: FEDERATION/SERVER_ID, the Raft timers (share/etc/oned.conf@7.4) and,
when the pod is labelled with its role, the Raft hooks.

Raft HA runs with MODE STANDALONE and ZONE_ID 0; SERVER_ID -1 is solo (the founder's first
boot: oned refuses to bootstrap a DB with SERVER_ID >= 0, src/nebula/Nebula.cc@7.4), the ID
the zone assigned otherwise. The timers are onerun's settings (docs/ha.md has the measured
failover times); other RAFT keys (LOG_RETENTION, ...) stay ONERUN_CONFIG's.

oned runs RAFT_LEADER_HOOK when it becomes leader and RAFT_FOLLOWER_HOOK when it becomes
follower, also at every start in HA mode (src/raft/RaftManager.cc). It execs COMMAND (an
absolute path, else one under remotes/hooks) with ARGUMENTS split on blanks, from a thread
of its own (src/hm/ExecuteHook.cc). COMMAND is this interpreter, so the hook is this
onerun, with no script to install or keep in step.
"""

from __future__ import annotations

import sys

from onerun.config import oneconf
from onerun.settings import HaSettings, PodLabelling

SOLO = -1
HOOKS = (("RAFT_LEADER_HOOK", "leader"), ("RAFT_FOLLOWER_HOOK", "follower"))


def hook_arguments(role: str, pod: PodLabelling) -> str:
    """ARGUMENTS of the hook for ``role``: ``onerun raft-hook`` and where to label."""
    return (f"-m onerun raft-hook {role} --api {pod.api} --namespace {pod.namespace} "
            f"--pod {pod.pod}")


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
    if ha.label_pod is not None:
        for hook, role in HOOKS:
            document.merge_vector(hook, {"COMMAND": sys.executable,
                                         "ARGUMENTS": hook_arguments(role, ha.label_pod)})
