"""The programs the pod cannot serve without, for supervisord's hook
(onerun/runtime/pid1.py; the rendered config lists them) and the liveness probe.

Imports the catalogue only, which imports nothing: the probe reads this on every run
(docs/probes.md). A critical program is never restarted in place (a crashed oned leaves
its lock); its FATAL ends the pod. Every other service is retried by supervisord and, if
it stays FATAL, the pod stays up without it.
"""

from onerun.catalogue import ONERUN_PROGRAMS, SERVICES

CRITICAL_PROGRAMS = frozenset(
    spec.name for spec in (*SERVICES, *ONERUN_PROGRAMS) if spec.critical)
