"""The pieces of keeping the operator's remotes: digests, the manifest, carrying files over.

The whole flow on the real release trees is in tests/integration/test_remotes.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from onerun.remotes import (
    Changes,
    carry_over,
    changes,
    digests,
    read_manifest,
    summary,
    write_manifest,
)


def test_digests_record_links_without_following_them(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/kvmrc").write_text("A=1\n")
    (tree / "linked-dir").symlink_to("etc")
    (tree / "linked-file").symlink_to("etc/kvmrc")
    os.mkfifo(tree / "fifo")  # nothing an image ships: left out

    found = digests(tree, skip=frozenset({"skipped"}))

    assert set(found) == {"etc/kvmrc", "linked-dir", "linked-file"}
    assert found["linked-dir"] == "link:etc" and found["linked-file"] == "link:etc/kvmrc"
    assert len(found["etc/kvmrc"]) == 64


def test_a_manifest_counts_only_for_the_tree_it_was_written_for(tmp_path: Path) -> None:
    path = tmp_path / "state/remotes-manifest.json"
    write_manifest(path, "7.0.0+abc", {"etc/kvmrc": "d1"}, os.getuid(), os.getgid())
    assert read_manifest(path, "7.0.0+abc") == {"etc/kvmrc": "d1"}
    assert read_manifest(path, "7.4.0+def") is None  # the tree was replaced after it
    assert read_manifest(path, None) is None  # a tree without onerun's stamp
    path.write_text("{not json")
    assert read_manifest(path, "7.0.0+abc") is None
    assert read_manifest(tmp_path / "absent.json", "7.0.0+abc") is None


def test_changes_are_edits_and_additions() -> None:
    found = changes({"a": "1", "b": "X", "c": "3"}, {"a": "1", "b": "2", "d": "4"})
    assert found == Changes(edited=("b",), added=("c",))
    assert found.paths == ("b", "c")


def test_carry_over_only_where_the_new_release_leaves_room(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for tree in (old, new):
        (tree / "etc").mkdir(parents=True)
        (tree / "vmm").mkdir()
    (old / "etc/same.conf").write_text("mine\n")  # edited; the new release ships it unchanged
    (new / "etc/same.conf").write_text("pristine\n")
    (old / "etc/changed.conf").write_text("mine\n")  # edited; the new release changes it
    (new / "etc/changed.conf").write_text("new release\n")
    (old / "vmm/patched.sh").write_text("mine\n")  # an edited driver: never carried
    (new / "vmm/patched.sh").write_text("pristine\n")
    (old / "vmm/extra").symlink_to("patched.sh")  # a third-party link
    (old / "vmm/blocked").write_text("mine\n")  # the new release has a directory there
    (new / "vmm/blocked").mkdir()
    recorded = {"etc/same.conf": "s", "etc/changed.conf": "c", "vmm/patched.sh": "p"}
    shipped = {"etc/same.conf": "s", "etc/changed.conf": "C2", "vmm/patched.sh": "p"}
    found = Changes(edited=("etc/changed.conf", "etc/same.conf", "vmm/patched.sh"),
                    added=("vmm/blocked", "vmm/extra"))

    carried, replaced = carry_over(old, new, found, recorded, shipped)

    assert carried == ["etc/same.conf", "vmm/extra"]
    assert replaced == ["etc/changed.conf", "vmm/blocked", "vmm/patched.sh"]
    assert (new / "etc/same.conf").read_text() == "mine\n"
    assert (new / "etc/changed.conf").read_text() == "new release\n"
    assert (new / "vmm/patched.sh").read_text() == "pristine\n"
    assert os.readlink(new / "vmm/extra") == "patched.sh"
    assert (new / "vmm/blocked").is_dir()


def test_summary_names_a_few_and_counts_the_rest() -> None:
    assert summary(["a", "b"]) == "a, b"
    assert summary([str(n) for n in range(25)], limit=3) == "0, 1, 2 and 22 more"
