"""What onerun was told: the frozen ``Settings`` every other module reads, and its HA part.

Plain data with defaults, no reading: ``onerun.settings.schema`` declares how each field
is read from the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onerun.secret import Secret

DbBackend = Literal["sqlite", "mysql"]
LogFormat = Literal["text", "json"]

ONED_DEFAULT_PORT = 2633  # PORT in share/etc/oned.conf (OpenNebula/one)
HA_ELECTION_TIMEOUT_MS = 2000  # docs/ha.md: failover time measured with these timers
HA_BROADCAST_TIMEOUT_MS = 250
HA_WAIT_TIMEOUT = 600.0


@dataclass(frozen=True)
class PodLabelling:
    """ONERUN_HA_LABEL_POD: where oned's Raft hooks label this pod with its role."""

    api: str  # the Kubernetes API server, https://host:port
    namespace: str
    pod: str


@dataclass(frozen=True)
class HaSettings:
    """One member of an HA zone (docs/ha.md). Every member lists the same ``members``."""

    members: tuple[str, ...]  # every member's zone-service address host:port, this one's too
    address: str  # this member's zone-service address, one of ``members``
    server_name: str  # this member's NAME in the zone's server pool
    endpoint: str  # this member's oned XML-RPC endpoint as the other members reach it
    oned_port: int  # oned.conf's PORT (ONERUN_CONFIG oned.PORT or the packaged 2633)
    election_timeout_ms: int = HA_ELECTION_TIMEOUT_MS
    broadcast_timeout_ms: int = HA_BROADCAST_TIMEOUT_MS
    wait_timeout: float = HA_WAIT_TIMEOUT
    label_pod: PodLabelling | None = None  # None: oned runs no Raft hook

    @property
    def peers(self) -> tuple[str, ...]:
        """The other members' zone-service addresses."""
        return tuple(member for member in self.members if member != self.address)

    @property
    def listen_port(self) -> int:
        return int(self.address.rpartition(":")[2])


@dataclass(frozen=True)
class Settings:
    """Everything onerun was told. Secrets are ``Secret`` objects that print as a mask."""

    oneadmin_password: Secret | None = None
    db_password: Secret | None = None
    one_key: Secret | None = None
    db_backend: DbBackend = "sqlite"
    db_host: str | None = None
    db_port: int = 3306
    db_user: str = "oneadmin"
    db_name: str = "opennebula"
    hostname: str | None = None
    monitor_address: str | None = None
    listen_address: str = "0.0.0.0"  # noqa: S104 - the chart's Service must reach the APIs
    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    db_wait_timeout: float = 300.0
    log_format: LogFormat = "text"
    root: Path | None = None
    services: frozenset[str] | None = None  # None: every installed service
    accept_empty_db: bool = False
    trust_one_key: bool = False  # write ONE_KEY beside a bootstrapped DB nothing proves it for
    ssh_dir: Path | None = None
    maintenance: bool = False
    backup_keep: int = 5  # automatic backups, made before upgrades
    backup_keep_manual: int | None = None  # ``onerun backup``'s; None: never pruned
    upgrade_stop_grace: float = 20.0  # seconds onedb may go on after SIGTERM (docs/upgrades.md)
    ha: HaSettings | None = None  # None: a single front-end, no zone

    def service_enabled(self, name: str) -> bool:
        """Whether the operator selected ``name`` (installation is checked elsewhere)."""
        return self.services is None or name in self.services
