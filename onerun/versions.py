"""OpenNebula version numbers: parsing, numeric comparison, and what the image carries.

Stdlib only: the probe and the start pipeline both read these files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

_VERSION_RE = re.compile(r"^\d+(?:\.\d+)*$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A dotted version compared numerically, so 7.10 > 7.4 (strings would disagree)."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        text = text.strip()
        if not _VERSION_RE.match(text):
            raise ValueError(f"not a version number: {text!r}")
        return cls(tuple(int(part) for part in text.split(".")))

    def _padded(self, length: int) -> tuple[int, ...]:
        return self.parts + (0,) * (length - len(self.parts))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        length = max(len(self.parts), len(other.parts))
        return self._padded(length) == other._padded(length)

    def __hash__(self) -> int:
        parts = list(self.parts)
        while parts and parts[-1] == 0:
            parts.pop()
        return hash(tuple(parts))

    def __lt__(self, other: Version) -> bool:
        length = max(len(self.parts), len(other.parts))
        return self._padded(length) < other._padded(length)

    @property
    def minor_series(self) -> str:
        """The release series, e.g. '7.0' for 7.0.2."""
        return ".".join(str(p) for p in self._padded(2)[:2])

    def __str__(self) -> str:
        return ".".join(str(part) for part in self.parts)


def _ruby_constant(text: str, name: str) -> str | None:
    """The string value of a Ruby constant assignment such as ``VERSION = '7.0.2'``."""
    match = re.search(rf"^\s*{name}\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


@dataclass(frozen=True)
class ImageVersions:
    """What the installed OpenNebula code is and which DB versions it expects.

    Any field is None where the file is absent (a bare test root): checks that
    need it are skipped and the plan says so.
    """

    release: Version | None
    db_version: Version | None
    local_db_version: Version | None


def read_release(release_files: Sequence[Path]) -> Version | None:
    """OpenNebula's ``VERSION`` from the first of ``release_files`` that assigns it.

    The constant moved from opennebula.rb to opennebula/version.rb in 7.2.0; a file that
    is absent, or present without the constant (7.2+'s opennebula.rb), is passed over.
    """
    for path in release_files:
        if path.is_file():
            value = _ruby_constant(path.read_text(errors="replace"), "VERSION")
            if value:
                return Version.parse(value)
    return None


def read_db_versions(database_schema_rb: Path) -> tuple[Version | None, Version | None]:
    """(LATEST_DB_VERSION, LATEST_LOCAL_DB_VERSION) from onedb's schema file, None if absent."""
    if not database_schema_rb.is_file():
        return None, None
    text = database_schema_rb.read_text(errors="replace")
    shared = _ruby_constant(text, "LATEST_DB_VERSION")
    local = _ruby_constant(text, "LATEST_LOCAL_DB_VERSION")
    return (Version.parse(shared) if shared else None, Version.parse(local) if local else None)


def read_image_versions(release_files: Sequence[Path], database_schema_rb: Path) -> ImageVersions:
    """The release (see read_release) and the DB versions onedb's schema file expects."""
    db, local = read_db_versions(database_schema_rb)
    return ImageVersions(release=read_release(release_files), db_version=db,
                         local_db_version=local)
