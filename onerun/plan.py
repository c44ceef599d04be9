"""The plan: an ordered list of small, idempotent actions that can describe and apply themselves.

``start --dry-run`` describes the plan; ``start`` applies the same plan. Every action's
``describe`` returns a flat dict (text and JSON output both come from it) and never
contains a secret: file contents are described by size and purpose only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from onerun import remotes
from onerun.errors import EXIT_OK, UnsafeStateError
from onerun.fileerrors import file_error
from onerun.fsutil import atomic_write, chown_if_root
from onerun.layout import Layout

Log = Callable[[str], None]

# Inside a tree copied from the image (the remotes): the release it came from.
STAMP_FILE = ".onerun-release"


@dataclass(frozen=True)
class ApplyContext:
    """What actions need to change the world."""

    layout: Layout
    uid: int
    gid: int
    log: Log


class Action(Protocol):
    def describe(self) -> dict[str, Any]:
        """A flat, secret-free description for the dry-run output."""
        ...

    def apply(self, ctx: ApplyContext) -> None:
        """Make it so; doing it twice changes nothing more."""
        ...


_DOING = {"ensure-dir": "creating or fixing the directory", "write": "writing",
          "remove": "removing", "replace-tree": "copying the image's tree to",
          "fix-owner": "giving oneadmin", "copy-ssh-keys": "copying SSH keys into",
          "generate-ssh-key": "generating an SSH key at"}


def _doing(step: dict[str, Any]) -> str:
    """A plan step as the operator reads it in an error: what onerun was doing, and why."""
    verb = _DOING.get(step["action"], f"applying step {step['action']} to")
    why = f" ({step['why']})" if step.get("why") else ""
    return f"{verb} {step.get('path', '')}{why}".replace("  ", " ")


def _mode(mode: int) -> str:
    return f"{mode:04o}"


@dataclass(frozen=True)
class Check:
    """A decision the policy took, shown in the plan; applying it only logs it."""

    name: str
    result: str  # "ok", "skipped", "note"
    detail: str

    def describe(self) -> dict[str, Any]:
        return {"action": "check", "name": self.name, "result": self.result, "detail": self.detail}

    def apply(self, ctx: ApplyContext) -> None:
        if self.result != "ok":
            ctx.log(f"{self.name}: {self.result}: {self.detail}")


@dataclass(frozen=True)
class EnsureDirectory:
    """Create a directory, or fix its own owner and mode; never touches its contents.

    Owned by oneadmin, or (``owned_by_oneadmin=False``) by the user onerun runs as, for what
    a root supervisord writes. ``mode`` None leaves the mode alone (a volume's root keeps the
    setgid bit fsGroup gave it).
    """

    path: Path
    mode: int | None
    owned_by_oneadmin: bool = True
    why: str = ""

    def describe(self) -> dict[str, Any]:
        owner = "oneadmin" if self.owned_by_oneadmin else "onerun's user"
        mode = _mode(self.mode) if self.mode is not None else "unchanged"
        return {"action": "ensure-dir", "path": str(self.path), "owner": owner,
                "mode": mode, "why": self.why}

    def apply(self, ctx: ApplyContext) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        status = self.path.stat()
        owner = (ctx.uid, ctx.gid) if self.owned_by_oneadmin else (os.geteuid(), os.getegid())
        if (status.st_uid, status.st_gid) != owner:
            chown_if_root(self.path, *owner)
        if self.mode is not None and status.st_mode & 0o7777 != self.mode:
            with contextlib.suppress(PermissionError):
                os.chmod(self.path, self.mode)


@dataclass(frozen=True)
class EnsureFileOwner:
    """Give one existing file to oneadmin (and ``mode``, when set); its content is left alone."""

    path: Path
    mode: int | None
    why: str = "oned runs as oneadmin and must read it"

    def describe(self) -> dict[str, Any]:
        mode = _mode(self.mode) if self.mode is not None else "unchanged"
        return {"action": "fix-owner", "path": str(self.path), "owner": "oneadmin",
                "mode": mode, "why": self.why}

    def apply(self, ctx: ApplyContext) -> None:
        chown_if_root(self.path, ctx.uid, ctx.gid)
        if self.mode is not None:
            os.chmod(self.path, self.mode)


@dataclass(frozen=True)
class WriteFile:
    """Write a file atomically, owned by oneadmin. ``sensitive`` content is never shown."""

    path: Path
    content: bytes = field(repr=False)
    mode: int
    why: str
    sensitive: bool = False
    only_if_absent: bool = False
    quiet: bool = False  # routine (e.g. a packaged file copied as is): not logged when applied

    def describe(self) -> dict[str, Any]:
        what = "secret" if self.sensitive else f"{len(self.content)} bytes"
        return {"action": "write", "path": str(self.path), "owner": "oneadmin",
                "mode": _mode(self.mode), "content": what, "why": self.why,
                **({"only_if_absent": True} if self.only_if_absent else {})}

    def apply(self, ctx: ApplyContext) -> None:
        if self.only_if_absent and self.path.exists():
            return
        atomic_write(self.path, self.content, self.mode, ctx.uid, ctx.gid)


@dataclass(frozen=True)
class RemoveFile:
    """Remove a file that is provably ours to remove; the reason is logged."""

    path: Path
    why: str

    def describe(self) -> dict[str, Any]:
        return {"action": "remove", "path": str(self.path), "why": self.why}

    def apply(self, ctx: ApplyContext) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        ctx.log(f"removed {self.path}: {self.why}")


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class ReplaceTree:
    """Replace ``target`` with a copy of ``source`` (the image's remotes), keeping the
    operator's files (onerun/remotes.py): carried into the new tree where the new release
    leaves them alone, and always copied to a dated directory beside it first.

    The swap is a sibling rename and the old tree goes only after the new one is in place,
    so an interruption leaves one complete tree; nothing of the old tree is deleted before
    its operator files have been copied out.
    """

    source: Path
    target: Path
    why: str
    stamp: str | None = None  # written to STAMP_FILE inside the copy: what release it is
    planned: datetime = field(default_factory=_utc_now, compare=False)  # dates the kept copy

    def keeps(self) -> Path:
        """Where the operator's files of the current tree go: remotes.onerun-<release>-<date>."""
        try:
            old = (self.target / STAMP_FILE).read_text(encoding="utf-8", errors="replace")
        except OSError:
            old = ""
        release = re.sub(r"[^0-9A-Za-z.]", "", old.strip().partition("+")[0]) or "unknown"
        return self.target.with_name(
            f"{self.target.name}.onerun-{release}-{self.planned.strftime('%Y%m%dT%H%M%SZ')}")

    def describe(self) -> dict[str, Any]:
        step = {"action": "replace-tree", "path": str(self.target), "source": str(self.source),
                "owner": "oneadmin", "why": self.why}
        if self.target.is_dir():
            step["keeps"] = str(self.keeps())  # created only when there is something to keep
        return step

    def apply(self, ctx: ApplyContext) -> None:
        staging = self.target.with_name(f".{self.target.name}.new")
        old = self.target.with_name(f".{self.target.name}.old")
        manifest = remotes.manifest_path(ctx.layout.state_dir, self.target)
        if staging.exists():
            shutil.rmtree(staging)  # a copy of the image's tree: nothing of the operator's
        remotes.remove_partial_keeps(self.target)
        if old.exists():
            if not self.target.exists():
                old.rename(self.target)  # killed between the two renames: the old tree is whole
            else:
                self._retire(old, manifest, ctx)  # killed after them: keep what it holds
        shutil.copytree(self.source, staging, symlinks=True)
        shipped = remotes.digests(staging)
        notes: list[str] = []
        whole = False
        if self.target.is_dir() and not self.target.is_symlink():
            recorded = remotes.read_manifest(manifest, self._stamp_of(self.target))
            whole = recorded is None
            if recorded is not None:
                notes = self._keep_changes(staging, recorded, shipped, ctx)
        if self.stamp is not None:
            (staging / STAMP_FILE).write_text(f"{self.stamp}\n")
        remotes.give_tree(staging, ctx.uid, ctx.gid)
        if whole:
            kept = remotes.keep_whole(self.target, self.keeps())
            notes = [f"kept the old {self.target} whole in {kept}: onerun has no record of what"
                     " it copied there, so your changes cannot be told apart"]
        elif self.target.exists() or self.target.is_symlink():
            self.target.rename(old)
        staging.rename(self.target)
        if old.exists():
            shutil.rmtree(old)
        if self.stamp is not None:
            remotes.write_manifest(manifest, self.stamp, shipped, ctx.uid, ctx.gid)
        ctx.log(f"refreshed {self.target} from {self.source}: {self.why}")
        for note in notes:
            ctx.log(note)

    @staticmethod
    def _stamp_of(tree: Path) -> str | None:
        try:
            return (tree / STAMP_FILE).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def _keep_changes(self, staging: Path, recorded: dict[str, str], shipped: dict[str, str],
                      ctx: ApplyContext) -> list[str]:
        """Copy the operator's files out and carry what is safe into staging; log lines."""
        current = remotes.digests(self.target, skip=frozenset({STAMP_FILE}))
        found = remotes.changes(current, recorded)
        if not found.paths:
            return [f"no local changes in the old {self.target}: nothing to keep"]
        kept = remotes.keep_files(self.target, found.paths, self.keeps(), ctx.uid, ctx.gid)
        carried, replaced = remotes.carry_over(self.target, staging, found, recorded, shipped)
        notes = [f"kept the {len(found.paths)} file(s) of the old {self.target} that differ from"
                 f" what onerun copied in {kept}: {remotes.summary(found.paths)}"]
        if carried:
            notes.append(f"carried {len(carried)} of them into the new tree (the new release"
                         f" leaves them alone): {remotes.summary(carried)}")
        if replaced:
            notes.append(f"the new release replaces {len(replaced)} of them with its own:"
                         f" {remotes.summary(replaced)}; yours are in {kept}, merge by hand"
                         " what you still need")
        return notes

    def _retire(self, tree: Path, manifest: Path, ctx: ApplyContext) -> None:
        """An old tree left beside a complete one: copy its operator files out, remove it."""
        recorded = remotes.read_manifest(manifest, self._stamp_of(tree))
        if recorded is None:
            kept = remotes.keep_whole(tree, self.keeps())
            ctx.log(f"kept {tree}, left by an interrupted refresh, whole in {kept}")
            return
        current = remotes.digests(tree, skip=frozenset({STAMP_FILE}))
        found = remotes.changes(current, recorded)
        if found.paths:
            kept = remotes.keep_files(tree, found.paths, self.keeps(), ctx.uid, ctx.gid)
            ctx.log(f"kept the {len(found.paths)} changed file(s) of {tree}, left by an"
                    f" interrupted refresh, in {kept}")
        shutil.rmtree(tree)


@dataclass(frozen=True)
class Refusal:
    """The policy's decision not to start: why, and what the operator should do."""

    reason: str
    fix: str

    def describe(self) -> dict[str, Any]:
        return {"action": "refuse", "reason": self.reason, "fix": self.fix}

    def error(self) -> UnsafeStateError:
        return UnsafeStateError(self.reason, self.fix)


@dataclass
class Plan:
    """What start will do, in order; ``refusal`` set means it stops before changing anything."""

    actions: list[Action] = field(default_factory=list)
    refusal: Refusal | None = None
    command: Sequence[str] = ()

    def add(self, action: Action) -> None:
        self.actions.append(action)

    @property
    def exit_code(self) -> int:
        return self.refusal.error().exit_code if self.refusal else EXIT_OK

    def describe(self) -> list[dict[str, Any]]:
        steps = [action.describe() for action in self.actions]
        if self.refusal is not None:
            steps.append(self.refusal.describe())
        elif self.command:
            steps.append({"action": "exec", "command": " ".join(self.command)})
        return steps

    def apply(self, ctx: ApplyContext) -> None:
        """Apply every action in order; a refusal is raised before any of them runs.

        A file that cannot be read or written ends the start as a refusal naming the path,
        the step and the likely fix (onerun/fileerrors.py), never as an unexpected error.
        """
        if self.refusal is not None:
            raise self.refusal.error()
        for action in self.actions:
            try:
                action.apply(ctx)
            except OSError as error:
                step = action.describe()
                path = Path(step["path"]) if step.get("path") else None
                raise file_error(error, _doing(step), ctx.layout, path) from error
            step = action.describe()
            if isinstance(action, WriteFile) and action.quiet:
                continue
            if step["action"] in ("write", "replace-tree", "generate-ssh-key", "copy-ssh-keys",
                                  "fix-owner"):
                ctx.log(f"{step['action']} {step.get('path')}: {step.get('why', '')}")
