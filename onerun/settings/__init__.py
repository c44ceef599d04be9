"""Settings: the environment (and ``*_FILE`` secrets) read once into a frozen object.

``load_settings`` is the contract: it reads every variable declared in
``onerun.settings.schema`` (one row per variable: rule, default, secrecy, description),
then runs the rules across settings (``onerun.settings.checks``). Every problem is
collected before failing, so an operator fixes them all in one go; the message names the
variable, the rule and the fix, and never a secret value. Variable names stay compatible
with the community image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from onerun.errors import SettingsError
from onerun.settings.checks import check_database, check_override_conflicts, zone
from onerun.settings.declaration import Reading
from onerun.settings.model import (
    HA_BROADCAST_TIMEOUT_MS,
    HA_ELECTION_TIMEOUT_MS,
    HA_WAIT_TIMEOUT,
    DbBackend,
    HaSettings,
    LogFormat,
    PodLabelling,
    Settings,
)
from onerun.settings.rules import ONE_KEY_MIN_LENGTH, PASSWORD_MAX_BYTES
from onerun.settings.schema import SETTINGS

__all__ = [
    "HA_BROADCAST_TIMEOUT_MS",
    "HA_ELECTION_TIMEOUT_MS",
    "HA_WAIT_TIMEOUT",
    "ONE_KEY_MIN_LENGTH",
    "PASSWORD_MAX_BYTES",
    "DbBackend",
    "HaSettings",
    "LogFormat",
    "PodLabelling",
    "Settings",
    "load_settings",
]


def load_settings(environ: Mapping[str, str], root: str | Path | None = None) -> Settings:
    """Build Settings from ``environ``; raise SettingsError listing every problem.

    ``root`` (the ``--root`` option) wins over ONERUN_ROOT.
    """
    reading = Reading(environ, SETTINGS)
    check_database(reading)
    check_override_conflicts(reading)
    ha = zone(reading)
    if reading.problems:
        raise SettingsError(reading.problems)
    root_raw = root if root is not None else reading.values["ONERUN_ROOT"]
    config_path = reading.text("ONERUN_CONFIG")
    return Settings(
        **{d.field: reading.values[d.name] for d in SETTINGS if d.field is not None},
        config_file=Path(config_path) if config_path else None,
        root=Path(root_raw).resolve() if root_raw else None,
        ha=ha,
    )
