"""The front-end's services: their fixed names (the ONERUN_SERVICES contract)."""

from __future__ import annotations

# Fixed by the foundation issue; every later part (supervisord, probes, chart) uses them.
SERVICE_NAMES = (
    "oned",
    "hem",
    "fireedge",
    "guacd",
    "oneflow",
    "onegate",
    "oneform",
    "oneks",
    "ssh-agent",
)
