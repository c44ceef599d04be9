"""oneadmin's SSH identity: keys copied from a mounted secret, or generated once."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from onerun.layout import Layout
from onerun.plan import ApplyContext
from onerun.sshkeys import CopyFile, CopySshKeys, GenerateSshKey

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to oneadmin")
needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                  reason="ssh-keygen (openssh-client) is not installed")


def context(root: Path, lines: list[str] | None = None, uid: int | None = None,
            gid: int | None = None) -> ApplyContext:
    sink = lines if lines is not None else []
    return ApplyContext(Layout(root), os.getuid() if uid is None else uid,
                        os.getgid() if gid is None else gid, sink.append)


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def _secret_dir(tmp_path: Path) -> Path:
    """A mounted Secret as Kubernetes lays it out: files are symlinks into ..data."""
    mount = tmp_path / "secret"
    data = mount / "..2025_01_01"
    data.mkdir(parents=True)
    contents = {"id_rsa": "PRIVATE RSA\n", "id_rsa.pub": "ssh-rsa AAAA oneadmin\n",
                "authorized_keys": "ssh-rsa AAAA oneadmin\n",
                "known_hosts": "host1 ssh-ed25519 AAAA\n",
                "config": "Host *\n  StrictHostKeyChecking accept-new\n",
                "README": "not a key", "id_rsa.bak": "old key"}
    for name, text in contents.items():
        (data / name).write_text(text)
        (data / name).chmod(0o644)
        (mount / name).symlink_to(f"{data.name}/{name}")
    return mount


def test_copy_ssh_keys_copies_known_names_with_ssh_modes(tmp_path: Path) -> None:
    source = _secret_dir(tmp_path)
    target = tmp_path / "var/lib/one/.ssh"
    action = CopySshKeys(source, target)
    action.apply(context(tmp_path))
    assert sorted(p.name for p in target.iterdir()) == [
        "authorized_keys", "config", "id_rsa", "id_rsa.pub", "known_hosts"]
    assert (target / "id_rsa").read_text() == "PRIVATE RSA\n"
    assert not (target / "id_rsa").is_symlink()
    assert mode_of(target / "id_rsa") == 0o600
    assert mode_of(target / "id_rsa.pub") == 0o644
    assert mode_of(target / "authorized_keys") == 0o600
    assert mode_of(target / "known_hosts") == 0o644
    assert mode_of(target / "config") == 0o600
    step = action.describe()
    assert step["content"] == "id_rsa, id_rsa.pub, authorized_keys, known_hosts, config"
    assert "PRIVATE" not in str(step)


def test_copy_ssh_keys_from_an_empty_dir_says_so(tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.mkdir()
    (source / "notes.txt").write_text("x")
    action = CopySshKeys(source, tmp_path / ".ssh")
    assert action.describe()["content"] == "nothing usable"
    action.apply(context(tmp_path))
    assert not (tmp_path / ".ssh").exists()


@needs_root
def test_copy_ssh_keys_owned_by_oneadmin(tmp_path: Path, oneadmin_user: pwd.struct_passwd) -> None:
    target = tmp_path / ".ssh"
    CopySshKeys(_secret_dir(tmp_path), target).apply(
        context(tmp_path, uid=oneadmin_user.pw_uid, gid=oneadmin_user.pw_gid))
    for path in target.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == (
            oneadmin_user.pw_uid, oneadmin_user.pw_gid), path


@needs_keygen
def test_generate_ssh_key_creates_a_pair_once(tmp_path: Path) -> None:
    ssh_dir = tmp_path / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    key = ssh_dir / "id_ed25519"
    lines: list[str] = []
    GenerateSshKey(key).apply(context(tmp_path, lines))
    assert mode_of(key) == 0o600
    assert mode_of(ssh_dir / "id_ed25519.pub") == 0o644
    assert (ssh_dir / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert sorted(p.name for p in ssh_dir.iterdir()) == ["id_ed25519", "id_ed25519.pub"]
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], check=True,
                             capture_output=True, text=True).stdout.split()[:2]
    assert (ssh_dir / "id_ed25519.pub").read_text().split()[:2] == derived
    assert lines == [f"generated an SSH key for oneadmin at {key}"]

    first = key.read_bytes()
    GenerateSshKey(key).apply(context(tmp_path, lines))
    assert key.read_bytes() == first
    assert len(lines) == 1


def test_generate_ssh_key_never_replaces_an_existing_key(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("operator's key")
    GenerateSshKey(key).apply(context(tmp_path))
    assert key.read_text() == "operator's key"
    assert not (tmp_path / "id_ed25519.pub").exists()


@needs_keygen
@needs_root
def test_generated_key_belongs_to_oneadmin(
    tmp_path: Path, oneadmin_user: pwd.struct_passwd
) -> None:
    key = tmp_path / "id_ed25519"
    GenerateSshKey(key).apply(
        context(tmp_path, uid=oneadmin_user.pw_uid, gid=oneadmin_user.pw_gid))
    for path in (key, tmp_path / "id_ed25519.pub"):
        assert path.stat().st_uid == oneadmin_user.pw_uid, path


def test_copy_file_copies_with_mode(tmp_path: Path) -> None:
    source = tmp_path / "usr/share/one/ssh/config"
    source.parent.mkdir(parents=True)
    source.write_text("Host *\n  ControlPath /run/one/ssh-socks/%r@%h:%p\n")
    source.chmod(0o644)
    target = tmp_path / "var/lib/one/.ssh/config"
    action = CopyFile(source, target, 0o600, "the volume hides the packaged config")
    action.apply(context(tmp_path))
    assert target.read_text() == source.read_text()
    assert mode_of(target) == 0o600
    assert action.describe()["content"] == f"copy of {source}"


FAKE_KEYGEN = """#!/bin/sh
# Stand-in for ssh-keygen (test only): records its environment, makes a dummy key pair.
env > "$RECORD_DIR/keygen-env"
while [ $# -gt 1 ]; do [ "$1" = "-f" ] && key="$2"; shift; done
echo private > "$key"; echo public > "$key.pub"
"""


def test_ssh_keygen_gets_no_secret_in_its_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    keygen = bin_dir / "ssh-keygen"
    keygen.write_text(FAKE_KEYGEN.replace("$RECORD_DIR", str(tmp_path)))
    keygen.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("ONEADMIN_PASSWORD", "Canary-Keygen-Pass")
    monkeypatch.setenv("DB_PASSWORD", "Canary-Keygen-Db")
    target = tmp_path / "ssh" / "id_ed25519"
    target.parent.mkdir()
    GenerateSshKey(target).apply(context(tmp_path))
    recorded = (tmp_path / "keygen-env").read_text()
    assert "Canary-Keygen" not in recorded
    assert target.read_text() == "private\n"
