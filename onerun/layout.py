"""Every filesystem path onerun touches, derived from one optional root prefix.

Stdlib and the import-free catalogue only (the probe imports it). Tests and demos pass
``--root DIR`` (or set ``ONERUN_ROOT``) so nothing outside DIR is read or written; in the
image the root is ``/``.
"""

from __future__ import annotations

import os
import pwd
from functools import cached_property
from pathlib import Path

from onerun.catalogue import SSH_AGENT_SOCKET

ONEADMIN = "oneadmin"
# The ids the OpenNebula packages give oneadmin; used where the user does not exist.
ONEADMIN_FALLBACK_ID = 9869


class Account:
    """The account OpenNebula's programs run as.

    A plain class, like Layout: this module is on the probe's path, and dataclasses costs
    the probe more CPU (it imports inspect) than everything else here together.
    """

    __slots__ = ("gid", "home", "name", "uid")

    def __init__(self, name: str, uid: int, gid: int, home: str) -> None:
        self.name, self.uid, self.gid, self.home = name, uid, gid, home

    def _key(self) -> tuple[str, int, int, str]:
        return (self.name, self.uid, self.gid, self.home)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Account) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Account(name={self.name!r}, uid={self.uid}, gid={self.gid}, home={self.home!r})"


def lookup_oneadmin() -> Account:
    """oneadmin from the passwd database, or the packages' fixed ids where it is absent."""
    try:
        entry = pwd.getpwnam(ONEADMIN)
    except KeyError:
        return Account(ONEADMIN, ONEADMIN_FALLBACK_ID, ONEADMIN_FALLBACK_ID, "/var/lib/one")
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


class Layout:
    """Paths under ``root``. Absolute container paths are written as they are in the image."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r})"

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> Layout:
        """The layout for ``root``, else ``$ONERUN_ROOT``, else ``/``."""
        chosen = root if root is not None else os.environ.get("ONERUN_ROOT") or "/"
        return cls(Path(chosen).resolve())

    def path(self, absolute: str) -> Path:
        """Map an absolute container path under the root prefix."""
        return self.root / absolute.lstrip("/")

    # --- configuration ---------------------------------------------------------------
    @property
    def etc_one(self) -> Path:
        """Rendered configs, written fresh at every start."""
        return self.path("/etc/one")

    @property
    def etc_dist(self) -> Path:
        """Pristine packaged configs (the image copies /etc/one here at build time)."""
        return self.path("/usr/share/one/etc-dist")

    @property
    def remotes_dist(self) -> Path:
        """Pristine drivers and probes (the image copies /var/lib/one/remotes here)."""
        return self.path("/usr/share/one/remotes-dist")

    @property
    def ssh_config_dist(self) -> Path:
        """The packaged ~oneadmin/.ssh/config, hidden by the volume."""
        return self.path("/usr/share/one/ssh/config")

    # --- the persistent volume -------------------------------------------------------
    @property
    def var_lib_one(self) -> Path:
        return self.path("/var/lib/one")

    @property
    def remotes(self) -> Path:
        return self.path("/var/lib/one/remotes")

    @property
    def dot_one(self) -> Path:
        return self.path("/var/lib/one/.one")

    @property
    def one_auth(self) -> Path:
        return self.dot_one / "one_auth"

    @property
    def one_key(self) -> Path:
        return self.dot_one / "one_key"

    def service_auth(self, name: str) -> Path:
        """One of the catalogue's SERVICE_AUTH_FILES in ~/.one."""
        return self.dot_one / name

    @property
    def ssh_dir(self) -> Path:
        return self.path("/var/lib/one/.ssh")

    @property
    def sqlite_db(self) -> Path:
        """oned always uses this file for sqlite (src/nebula/Nebula.cc in OpenNebula/one)."""
        return self.path("/var/lib/one/one.db")

    @property
    def backups(self) -> Path:
        return self.path("/var/lib/one/backups")

    @property
    def state_dir(self) -> Path:
        """onerun's own records on the volume."""
        return self.path("/var/lib/one/.onerun")

    @property
    def volume_marker(self) -> Path:
        """Written once oned answered on a bootstrapped DB: versions of that start."""
        return self.state_dir / "last-start.json"

    @property
    def bootstrap_marker(self) -> Path:
        """Written before onerun hands a first bootstrap to oned (onerun/marker.py)."""
        return self.state_dir / "bootstrap-started.json"

    @property
    def datastores(self) -> Path:
        """oned's datastore directories, one per datastore id (images, disks)."""
        return self.path("/var/lib/one/datastores")

    @property
    def restore_failed_marker(self) -> Path:
        """Present while a failed restore leaves the DB in an unknown state."""
        return self.state_dir / "restore-failed.json"

    # --- ephemeral runtime -----------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.path("/var/log/one")

    @property
    def run_one(self) -> Path:
        return self.path("/run/one")

    @property
    def ssh_socks(self) -> Path:
        return self.path("/run/one/ssh-socks")

    @property
    def ssh_agent_sock(self) -> Path:
        return self.path(SSH_AGENT_SOCKET)

    @property
    def lock_dir(self) -> Path:
        return self.path("/var/lock/one")

    @property
    def lock_file(self) -> Path:
        """oned's O_EXCL lock; stale after a SIGKILL (src/nebula/oned.cc in OpenNebula/one)."""
        return self.lock_dir / "one"

    @property
    def run_onerun(self) -> Path:
        return self.path("/run/onerun")

    @property
    def supervisor_conf(self) -> Path:
        return self.run_onerun / "supervisord.conf"

    @property
    def supervisor_sock(self) -> Path:
        return self.run_onerun / "supervisor.sock"

    @property
    def maintenance_flag(self) -> Path:
        """Present while ONERUN_MAINTENANCE=1: the probes read it."""
        return self.run_onerun / "maintenance"

    @property
    def service_account(self) -> Path:
        """The pod's Kubernetes API credentials (token, ca.crt), mounted by the kubelet."""
        return self.path("/var/run/secrets/kubernetes.io/serviceaccount")

    # --- what the image installed ----------------------------------------------------
    @property
    def opennebula_rb(self) -> Path:
        """Holds ``VERSION = '7.0.2'`` up to 7.0.x; from 7.2.0 on it only requires version.rb."""
        return self.path("/usr/lib/one/ruby/opennebula.rb")

    @property
    def opennebula_version_rb(self) -> Path:
        """Holds ``VERSION`` from 7.2.0 on (src/oca/ruby/opennebula/version.rb@release-7.2.0)."""
        return self.path("/usr/lib/one/ruby/opennebula/version.rb")

    def release_files(self) -> tuple[Path, Path]:
        """Where the image's release is read, first match wins: each release's own place."""
        return (self.opennebula_version_rb, self.opennebula_rb)

    @property
    def database_schema_rb(self) -> Path:
        """Holds LATEST_DB_VERSION / LATEST_LOCAL_DB_VERSION: what this release expects."""
        return self.path("/usr/lib/one/ruby/onedb/database_schema.rb")

    def binary(self, absolute: str) -> Path:
        """An installed program such as /usr/bin/oned, under the root."""
        return self.path(absolute)

    @cached_property
    def oneadmin(self) -> Account:
        return lookup_oneadmin()
