"""Which files of a copied image tree (the remotes) the operator changed, and keeping them.

Why: /var/lib/one/remotes is copied from the image and replaced when the image changes,
because the drivers must match oned. Operators edit driver settings in remotes/etc
(kvmrc, OpenNebulaNetwork.conf, ...) and add third-party drivers there. onerun records a
digest of every file it copies (the manifest, in /var/lib/one/.onerun); at the next
replacement each file that differs from it is the operator's. Those files are copied to a
dated directory beside the tree, and carried into the new tree where the new release
leaves them alone: as dpkg does with conffiles and with files no package owns
(docs/upgrades.md, "The remotes after an image change"). Stdlib only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from onerun.fsutil import atomic_write, running_as_root

SETTINGS_DIR = "etc"  # inside the remotes: the drivers' settings, the only edits carried over
_CHUNK = 1 << 20


def _digest(path: Path) -> str | None:
    """A file's identity: ``link:<target>`` for a link, the sha256 of a regular file's bytes,
    None for anything else (sockets, FIFOs: nothing an image ships)."""
    if path.is_symlink():
        return f"link:{os.readlink(path)}"
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digests(tree: Path, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """The digest of every file and link below ``tree`` by relative path; links to
    directories are entries, never followed. ``skip``: relative paths left out."""
    found: dict[str, str] = {}
    for directory, dirnames, filenames in os.walk(tree):
        links = [name for name in dirnames if Path(directory, name).is_symlink()]
        dirnames[:] = [name for name in dirnames if name not in links]
        for name in (*filenames, *links):
            path = Path(directory, name)
            relative = path.relative_to(tree).as_posix()
            value = _digest(path) if relative not in skip else None
            if value is not None:
                found[relative] = value
    return found


def manifest_path(state_dir: Path, tree: Path) -> Path:
    return state_dir / f"{tree.name}-manifest.json"


def read_manifest(path: Path, stamp: str | None) -> dict[str, str] | None:
    """The recorded digests, when the manifest belongs to the tree stamped ``stamp``."""
    if stamp is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if data.get("stamp") != stamp or not isinstance(files, dict):
        return None
    return {str(key): str(value) for key, value in files.items()}


def write_manifest(path: Path, stamp: str, files: dict[str, str], uid: int, gid: int) -> None:
    """Record what was copied (before any carried-over file), tied to the tree's stamp."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = json.dumps({"stamp": stamp, "files": files}, sort_keys=True, indent=0)
    atomic_write(path, (payload + "\n").encode(), 0o644, uid, gid)


@dataclass(frozen=True)
class Changes:
    """The operator's files in a tree, compared with what onerun copied there."""

    edited: tuple[str, ...]  # shipped by that release, changed since
    added: tuple[str, ...]  # not shipped by that release

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted((*self.edited, *self.added)))


def changes(current: dict[str, str], recorded: dict[str, str]) -> Changes:
    edited = tuple(sorted(p for p, d in current.items() if p in recorded and recorded[p] != d))
    added = tuple(sorted(p for p in current if p not in recorded))
    return Changes(edited, added)


def _free(tree: Path, relative: str) -> bool:
    """Nothing in ``tree`` at ``relative``, and no file where one of its directories goes."""
    path = tree
    for part in PurePosixPath(relative).parts[:-1]:
        path = path / part
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            return False
    target = tree / relative
    return not target.exists() and not target.is_symlink()


def _copy(source_tree: Path, target_tree: Path, relative: str) -> None:
    """Copy one file or link with its mode and times, creating its directories."""
    target = target_tree / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source_tree / relative, target, follow_symlinks=False)


def carry_over(old_tree: Path, new_tree: Path, found: Changes, recorded: dict[str, str],
               shipped: dict[str, str]) -> tuple[list[str], list[str]]:
    """Copy into ``new_tree`` the operator's files the new release leaves alone.

    Carried: an edited file under etc/ that the new release ships unchanged from the old
    one, and a file neither release ships (a third-party driver) where the new tree has
    room for it. Returns (carried, replaced): replaced are the operator's files the new
    release overrides with its own (they are only in the dated copy).
    """
    carried: list[str] = []
    replaced: list[str] = []
    for relative in found.edited:
        settings = PurePosixPath(relative).parts[0] == SETTINGS_DIR
        if settings and shipped.get(relative) == recorded[relative]:
            (new_tree / relative).unlink()
            _copy(old_tree, new_tree, relative)
            carried.append(relative)
        else:
            replaced.append(relative)
    for relative in found.added:
        if relative not in shipped and _free(new_tree, relative):
            _copy(old_tree, new_tree, relative)
            carried.append(relative)
        else:
            replaced.append(relative)
    return sorted(carried), sorted(replaced)


def give_tree(tree: Path, uid: int, gid: int) -> None:
    """Give a tree onerun just made to oneadmin (no-op unless root); links not followed."""
    if not running_as_root():
        return
    for directory, dirnames, filenames in os.walk(tree):
        os.chown(directory, uid, gid, follow_symlinks=False)
        for name in dirnames + filenames:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def free_name(wanted: Path) -> Path:
    """``wanted``, or ``wanted-2``, ``wanted-3``...: the first that does not exist."""
    candidate, number = wanted, 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = wanted.with_name(f"{wanted.name}-{number}")
    return candidate


def keep_files(tree: Path, paths: tuple[str, ...], wanted: Path, uid: int, gid: int) -> Path:
    """Copy ``paths`` of ``tree`` into a new 0700 directory named like ``wanted``; return it.

    Built under a dot-name and renamed when complete, so a directory with the dated name
    always holds every file.
    """
    final = free_name(wanted)
    partial = final.with_name(f".{final.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(mode=0o700)
    for relative in paths:
        _copy(tree, partial, relative)
    give_tree(partial, uid, gid)
    partial.rename(final)
    return final


def keep_whole(tree: Path, wanted: Path) -> Path:
    """Move the whole tree aside to a directory named like ``wanted`` (0700); return it."""
    final = free_name(wanted)
    tree.rename(final)
    with contextlib.suppress(OSError):
        final.chmod(0o700)
    return final


def remove_partial_keeps(tree: Path) -> None:
    """Copies left by a start killed while keeping files: the originals are still there."""
    for leftover in tree.parent.glob(f".{tree.name}.onerun-*.partial"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)


def summary(paths: list[str] | tuple[str, ...], limit: int = 20) -> str:
    """Paths for a log line; past ``limit``, how many more."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
