"""The programs the pod cannot serve without, in one place for supervisord's hook
(onerun/runtime/pid1.py; the rendered config lists them) and the liveness probe.

No imports at all: the probe reads this on every run (docs/probes.md). A critical
program is never restarted in place (a crashed oned leaves its lock); its FATAL ends
the pod. Every other service is retried by supervisord and, if it stays FATAL, the pod
stays up without it.
"""

# OpenNebula services (names from services.SERVICE_NAMES) that are critical.
CRITICAL_SERVICES = ("oned", "ssh-agent")

# onerun's one-shot that heals service auth files and records the start.
POST_START_PROGRAM = "onerun-post-start"

CRITICAL_PROGRAMS = frozenset((*CRITICAL_SERVICES, POST_START_PROGRAM))
