"""oneadmin's SSH identity: keys from a mounted secret, or one generated once on the volume,
and ``onerun ssh-add``, which loads them into oneadmin's agent.

The drivers reach the hypervisors over SSH as oneadmin (src/mad/sh/scripts_common.sh); a volume over
/var/lib/one hides the packaged ~/.ssh, so onerun puts back what is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onerun.fsutil import atomic_write
from onerun.layout import Layout
from onerun.log import Logger
from onerun.plan import ApplyContext

# Private key names ssh tries, in its order; files taken from ONERUN_SSH_DIR are these, their
# .pub files and _OTHER, with the modes ssh insists on. Anything else there is ignored.
PRIVATE_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
_PRIVATE = PRIVATE_KEY_NAMES
_PUBLIC = tuple(f"{name}.pub" for name in _PRIVATE)
_OTHER = {"authorized_keys": 0o600, "known_hosts": 0o644, "config": 0o600}


_CHILD_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class CopyFile:
    """Copy one file into place atomically, owned by oneadmin."""

    source: Path
    target: Path
    mode: int
    why: str

    def describe(self) -> dict[str, Any]:
        return {"action": "write", "path": str(self.target), "owner": "oneadmin",
                "mode": f"{self.mode:04o}", "content": f"copy of {self.source}", "why": self.why}

    def apply(self, ctx: ApplyContext) -> None:
        atomic_write(self.target, self.source.read_bytes(), self.mode, ctx.uid, ctx.gid)


@dataclass(frozen=True)
class CopySshKeys:
    """Install the keys of a mounted secret directory with the modes ssh insists on."""

    source: Path
    target: Path

    def _files(self) -> list[tuple[str, int]]:
        wanted = [(n, 0o600) for n in _PRIVATE] + [(n, 0o644) for n in _PUBLIC]
        wanted += list(_OTHER.items())
        return [(name, mode) for name, mode in wanted if (self.source / name).is_file()]

    def describe(self) -> dict[str, Any]:
        names = ", ".join(name for name, _ in self._files()) or "nothing usable"
        return {"action": "copy-ssh-keys", "path": str(self.target), "source": str(self.source),
                "owner": "oneadmin", "content": names,
                "why": "oneadmin's SSH identity from ONERUN_SSH_DIR"}

    def apply(self, ctx: ApplyContext) -> None:
        for name, mode in self._files():
            data = (self.source / name).read_bytes()
            atomic_write(self.target / name, data, mode, ctx.uid, ctx.gid)


@dataclass(frozen=True)
class GenerateSshKey:
    """Generate an ed25519 key once; an existing key is never replaced."""

    path: Path

    def describe(self) -> dict[str, Any]:
        return {"action": "generate-ssh-key", "path": str(self.path), "owner": "oneadmin",
                "mode": "0600", "why": "no SSH key on the volume and no ONERUN_SSH_DIR"}

    def apply(self, ctx: ApplyContext) -> None:
        if self.path.exists():
            return
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            ctx.log("ssh-keygen is not installed: no SSH key generated")
            return
        # Generate in a private temp dir, then move both files in atomically.
        with tempfile.TemporaryDirectory(dir=self.path.parent) as tmp:
            key = Path(tmp) / self.path.name
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "oneadmin@onerun", "-f", str(key)],
                check=True, stdin=subprocess.DEVNULL, capture_output=True,
                env=_CHILD_ENVIRONMENT,  # never onerun's own: it holds the secrets
            )
            public = key.with_name(key.name + ".pub")
            atomic_write(self.path.with_name(public.name), public.read_bytes(), 0o644,
                         ctx.uid, ctx.gid)
            atomic_write(self.path, key.read_bytes(), 0o600, ctx.uid, ctx.gid)
        ctx.log(f"generated an SSH key for oneadmin at {self.path}")


# --- onerun ssh-add: the keys into oneadmin's agent ---------------------------------------

AGENT_WAIT_SECONDS = 10.0


def load_agent_keys(layout: Layout, log: Logger, timeout: float = AGENT_WAIT_SECONDS) -> int:
    """Wait for the agent's socket, then ``ssh-add`` the keys in ~/.ssh.

    ssh-agent itself is the supervisord program (no process of ours stays its parent);
    this one-shot does what the packaged unit's ExecStartPost does
    (share/pkgs/services/systemd/opennebula-ssh-agent.service). A failed ssh-add is a
    warning, as there: the agent runs without keys. Exit 1 only when the agent never
    listened, whose own failure then ends the pod (onerun.runtime.critical).
    """
    socket_path = layout.ssh_agent_sock
    deadline = time.monotonic() + timeout
    while not socket_path.is_socket():
        if time.monotonic() > deadline:
            log.error(f"ssh-agent did not create {socket_path} within {timeout:g} s")
            return 1
        time.sleep(0.05)
    keys = [str(layout.ssh_dir / n) for n in PRIVATE_KEY_NAMES
            if (layout.ssh_dir / n).is_file()]
    if not keys:
        log.warning(f"no key in {layout.ssh_dir}; the agent holds none")
        return 0
    packaged = layout.binary("/usr/bin/ssh-add")
    result = subprocess.run(
        [str(packaged) if packaged.exists() else "ssh-add", *keys],
        env={**os.environ, "SSH_AUTH_SOCK": str(socket_path)},
        stdin=subprocess.DEVNULL, check=False,
    )
    if result.returncode != 0:
        log.warning(f"ssh-add failed with exit {result.returncode}; the agent holds no key")
    else:
        log.info(f"ssh-agent at {socket_path} holds {len(keys)} key(s)")
    return 0
