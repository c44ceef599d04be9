"""The remotes after an image change, on the real trees of OpenNebula 7.0.0 and 7.4.0.

The trees come from ../shared/opennebula-build (var/lib/one/remotes as install.sh laid them
out). Each test lets a 7.0.0 image copy its remotes onto the volume, makes the changes an
operator makes (a setting in remotes/etc, a third-party driver), then lets a 7.4.0 image
replace them, and checks that no operator file is lost without a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from testlib import BUILD, grant_traverse, require_shared, restore_modes

from onerun.layout import Layout
from onerun.observe import remotes_stamp
from onerun.plan import STAMP_FILE, ApplyContext, ReplaceTree
from onerun.versions import Version

FS_CONF = "etc/datastore/fs/fs.conf"  # the same in 7.0.0 and 7.4.0
KVMRC = "etc/vmm/kvm/kvmrc"  # changed by 7.4.0
LXC_PCI = "etc/im/lxc-probes.d/pci.conf"  # new in 7.4.0
DRIVER = "vmm/acme/deploy"  # a third-party driver: no release ships it
DRIVER_RC = "etc/vmm/acme/acmerc"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The remotes of each release, extracted once from the real build trees."""
    base = tmp_path_factory.mktemp("releases")
    trees = {}
    for version in ("7.0.0", "7.4.0"):
        archive = require_shared(BUILD / f"opennebula-{version}-debian12-amd64.tar.zst")
        (base / version).mkdir()
        subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(base / version),
                        "./var/lib/one/remotes"], check=True)
        trees[version] = base / version / "var/lib/one/remotes"
    return trees


def files(tree: Path) -> dict[str, bytes]:
    """Every file of a tree by relative path (links as their target), onerun's stamp aside."""
    found = {}
    for directory, _, names in os.walk(tree):
        for name in names:
            path = Path(directory, name)
            relative = str(path.relative_to(tree))
            if relative == STAMP_FILE:
                continue
            found[relative] = (os.readlink(path).encode() if path.is_symlink()
                               else path.read_bytes())
    return found


class Volume:
    """A root whose image changes: ``image(version)`` is what a start of that image plans."""

    def __init__(self, root: Path, releases: dict[str, Path]) -> None:
        self.root = root
        self.layout = Layout(root)
        self.releases = releases
        self.lines: list[str] = []
        self.layout.var_lib_one.mkdir(parents=True, exist_ok=True)

    def image(self, version: str) -> ReplaceTree:
        dist = self.layout.remotes_dist
        if dist.exists():
            shutil.rmtree(dist)
        shutil.copytree(self.releases[version], dist, symlinks=True)
        stamp = remotes_stamp(dist, Version.parse(version))
        return ReplaceTree(dist, self.layout.remotes, f"the image's remotes are {stamp}",
                           stamp=stamp)

    def apply(self, action: ReplaceTree) -> None:
        uid, gid = (9869, 9869) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        action.apply(ApplyContext(self.layout, uid, gid, self.lines.append))

    def kept(self) -> list[Path]:
        return sorted(p for p in self.layout.var_lib_one.iterdir()
                      if p.name.startswith("remotes.onerun-"))

    def edit(self, relative: str, text: str, mode: int = 0o644) -> bytes:
        path = self.layout.remotes / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        content = (path.read_bytes() if path.exists() else b"") + text.encode()
        path.write_bytes(content)
        path.chmod(mode)
        return content


@pytest.fixture
def volume(tmp_path: Path, releases: dict[str, Path]) -> Volume:
    return Volume(tmp_path / "root", releases)


def test_the_release_trees_differ_as_the_tests_assume(releases: dict[str, Path]) -> None:
    old, new = files(releases["7.0.0"]), files(releases["7.4.0"])
    assert old[FS_CONF] == new[FS_CONF]
    assert old[KVMRC] != new[KVMRC]
    assert LXC_PCI not in old and LXC_PCI in new
    assert DRIVER not in new and DRIVER_RC not in new


def test_an_image_upgrade_carries_and_keeps_the_operators_files(volume: Volume) -> None:
    volume.apply(volume.image("7.0.0"))
    fs_conf = volume.edit(FS_CONF, "\n# operator: our datastore setting\n")
    kvmrc = volume.edit(KVMRC, "\nDEFAULT_ATTACH_CACHE=none  # operator\n")
    lxc_pci = volume.edit(LXC_PCI, "# operator: written before 7.4.0 shipped this file\n")
    driver = volume.edit(DRIVER, "#!/bin/sh\necho acme\n", 0o755)
    driver_rc = volume.edit(DRIVER_RC, "ACME_POOL=fast\n")

    upgrade = volume.image("7.4.0")
    keep = Path(upgrade.describe()["keeps"])  # the plan names the copy before anything runs
    assert keep.parent == volume.layout.var_lib_one
    assert keep.name.startswith("remotes.onerun-7.0.0-")
    volume.apply(upgrade)

    # The remotes are 7.4.0's, plus the operator's files the new release leaves alone.
    expected = files(volume.releases["7.4.0"])
    expected.update({FS_CONF: fs_conf, DRIVER: driver, DRIVER_RC: driver_rc})
    assert files(volume.layout.remotes) == expected
    assert os.access(volume.layout.remotes / DRIVER, os.X_OK)
    # Every file that differed from what onerun had copied is kept, dated, beside them.
    assert volume.kept() == [keep]
    assert files(keep) == {FS_CONF: fs_conf, KVMRC: kvmrc, LXC_PCI: lxc_pci, DRIVER: driver,
                           DRIVER_RC: driver_rc}
    if os.geteuid() == 0:
        assert (keep / KVMRC).stat().st_uid == 9869
    # The log says where, and which edits the new release overrides.
    assert any(str(keep) in line for line in volume.lines)
    overridden = [line for line in volume.lines if "merge" in line]
    assert overridden and KVMRC in overridden[0] and LXC_PCI in overridden[0]
    assert FS_CONF not in overridden[0]


def test_untouched_remotes_are_replaced_without_a_copy(volume: Volume) -> None:
    volume.apply(volume.image("7.0.0"))
    volume.apply(volume.image("7.4.0"))
    assert files(volume.layout.remotes) == files(volume.releases["7.4.0"])
    assert volume.kept() == []
    assert sorted(p.name for p in volume.layout.var_lib_one.iterdir()
                  if p.name.startswith((".remotes", "remotes"))) == ["remotes"]


def test_remotes_onerun_has_no_record_of_are_kept_whole(volume: Volume) -> None:
    """Copied by something else (or an older onerun): which files are edits is unknown."""
    shutil.copytree(volume.releases["7.0.0"], volume.layout.remotes)
    volume.edit(KVMRC, "\n# operator\n")
    before = files(volume.layout.remotes)

    volume.apply(volume.image("7.4.0"))

    assert files(volume.layout.remotes) == files(volume.releases["7.4.0"])
    [keep] = volume.kept()
    assert keep.name.startswith("remotes.onerun-unknown-")
    assert files(keep) == before
    assert any(str(keep) in line and "whole" in line for line in volume.lines)


def test_a_start_killed_between_the_renames_loses_no_operator_file(volume: Volume) -> None:
    volume.apply(volume.image("7.0.0"))
    fs_conf = volume.edit(FS_CONF, "\n# operator\n")
    # What an earlier replacement leaves when killed after moving the old tree aside:
    volume.layout.remotes.rename(volume.layout.remotes.with_name(".remotes.old"))
    assert not volume.layout.remotes.exists()

    volume.apply(volume.image("7.4.0"))

    assert (volume.layout.remotes / FS_CONF).read_bytes() == fs_conf
    [keep] = volume.kept()
    assert (keep / FS_CONF).read_bytes() == fs_conf
    assert not volume.layout.remotes.with_name(".remotes.old").exists()


def test_the_dry_run_names_the_copy(make_root: Callable[..., Path],
                                    releases: dict[str, Path]) -> None:
    root = make_root("7.4.0", image_release="7.4.0", image_db_version="7.4.0")
    volume = Volume(root, releases)
    volume.apply(volume.image("7.0.0"))
    volume.image("7.4.0")  # the new image's remotes-dist
    changed = grant_traverse([root / "usr"])
    try:
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ONEADMIN_PASSWORD": "Plan-Pass-1"}
        command = [sys.executable, "-m", "onerun", "start", "--dry-run", "--root", str(root)]
        text = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                              timeout=60)
        as_json = subprocess.run(command, env={**env, "ONERUN_LOG_FORMAT": "json"},
                                 capture_output=True, text=True, check=False, timeout=60)
    finally:
        restore_modes(changed)
    assert text.returncode == 0, text.stderr
    [step] = [s for s in json.loads(as_json.stdout)["steps"] if s["action"] == "replace-tree"]
    keep = Path(step["keeps"])
    assert keep.parent == volume.layout.var_lib_one
    assert keep.name.startswith("remotes.onerun-7.0.0-")
    assert f"keeps={volume.layout.var_lib_one}/remotes.onerun-7.0.0-" in text.stdout
    assert volume.kept() == []  # a dry run copies nothing
