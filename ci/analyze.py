"""Release analysis for a bump PR: what changed between two OpenNebula releases that
matters to this image, onerun and the chart.

Input is what upstream publishes: the Ubuntu 24.04 apt ``Packages`` index of each release
and the .deb files it names, unpacked with ``dpkg-deb -x``. The report covers every package
the image installs *and the OpenNebula packages they pull in* (the community analysis only
diffed one deb's /etc/one and missed OneGate's 7.4 config change: .github/scripts/
analyze-release.sh in pablodelarco/opennebula-helm).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ci.versions import DISTRIBUTION, REPO_URL, Fetch, fetch_url, packages_url
from onerun.catalogue import SERVICE_AUTH_FILES
from onerun.versions import Version, read_db_versions

# What docker/Dockerfile installs from OpenNebula's repository (opennebula-form from 7.2).
INSTALLED = (
    "opennebula",
    "opennebula-fireedge",
    "opennebula-guacd",
    "opennebula-flow",
    "opennebula-gate",
    "opennebula-tools",
    "opennebula-form",
)
RELATION_FIELDS = ("Pre-Depends", "Depends", "Recommends")
PULLING_FIELDS = ("Pre-Depends", "Depends")  # --no-install-recommends
ONEDB_DIR = "usr/lib/one/ruby/onedb/"
SCHEMA_RB = "usr/lib/one/ruby/onedb/database_schema.rb"
DIFF_LINES = 200  # per file, so one reformatted config cannot drown the PR body

_UNIT = re.compile(r"^(?:usr/)?lib/systemd/system/([^/]+\.(?:service|timer))$")
_AUTH_TOKEN = re.compile(rb"(?<![A-Za-z0-9_])([a-z][a-z0-9]*_auth)(?![A-Za-z0-9_])")
_NAME = re.compile(r"^\s*([A-Za-z0-9.+\-]+)")

Stanza = dict[str, str]


def parse_packages(text: str) -> dict[str, Stanza]:
    """Parse a Debian ``Packages`` index (RFC822-like stanzas, continuation lines).

    When one index lists several builds of a package, the last one wins: apt repositories
    of a single OpenNebula release carry one build per package.
    """
    packages: dict[str, Stanza] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        stanza: Stanza = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                stanza[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                stanza[key] = value.strip()
        if "Package" in stanza:
            packages[stanza["Package"]] = stanza
    return packages


def relations(stanza: Stanza, fields: Iterable[str], release: str) -> set[str]:
    """Relation entries with the release's own version replaced by ``<release>``, so a
    ``(= 7.4.0-1)`` constraint that merely follows the release is not reported as a change."""
    entries: set[str] = set()
    for name in fields:
        for raw in stanza.get(name, "").split(","):
            entry = " ".join(raw.split())
            if entry:
                entries.add(f"{name}: {entry.replace(release, '<release>')}")
    return entries


def dependency_names(stanza: Stanza) -> list[str]:
    """Names a package pulls in (every alternative of ``a | b``)."""
    names = []
    for name in PULLING_FIELDS:
        for entry in stanza.get(name, "").split(","):
            for alternative in entry.split("|"):
                match = _NAME.match(alternative)
                if match:
                    names.append(match.group(1))
    return names


def closure(packages: Mapping[str, Stanza], roots: Iterable[str]) -> list[str]:
    """The packages of this repository that installing ``roots`` brings in, sorted."""
    seen: set[str] = set()
    todo = [name for name in roots if name in packages]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(dep for dep in dependency_names(packages[name]) if dep in packages)
    return sorted(seen)


@dataclass
class Release:
    """One release: its apt index and the unpacked payload of each package we install."""

    version: str
    packages: dict[str, Stanza]
    roots: dict[str, Path] = field(default_factory=dict)  # package -> dpkg-deb -x target
    _owners: dict[str, str] | None = field(default=None, init=False, repr=False)

    @property
    def installed(self) -> list[str]:
        return closure(self.packages, INSTALLED)

    def files(self, package: str) -> set[str]:
        """Paths (files and symlinks) in one package, relative to /."""
        root = self.roots.get(package)
        if root is None or not root.is_dir():
            return set()
        return {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() or p.is_symlink()
        }

    def all_files(self) -> dict[str, str]:
        """Every path of every installed package -> the package that ships it. Walked once
        (FireEdge alone ships tens of thousands of files); fill ``roots`` before calling."""
        if self._owners is None:
            self._owners = {}
            for package in self.installed:
                for path in self.files(package):
                    self._owners[path] = package
        return self._owners

    def read(self, path: str) -> bytes | None:
        owner = self.all_files().get(path)
        if owner is None:
            return None
        target = self.roots[owner] / path
        return target.read_bytes() if target.is_file() else None

    def schema_versions(self) -> tuple[Version | None, Version | None]:
        """(LATEST_DB_VERSION, LATEST_LOCAL_DB_VERSION) from onedb's schema file."""
        owner = self.all_files().get(SCHEMA_RB)
        if owner is None:
            return None, None
        return read_db_versions(self.roots[owner] / SCHEMA_RB)

    def auth_names(self) -> set[str]:
        """``*_auth`` names in oned and the Ruby servers: where service auth files live."""
        names: set[str] = set()
        for path in self.all_files():
            if path == "usr/bin/oned" or (path.startswith("usr/lib/one/") and path.endswith(".rb")):
                data = self.read(path) or b""
                names.update(m.decode() for m in _AUTH_TOKEN.findall(data))
        return names

    def units(self) -> set[str]:
        return {m.group(1) for path in self.all_files() if (m := _UNIT.match(path))}


@dataclass
class Report:
    """The findings, kept structured so tests assert on them and not on Markdown."""

    old: str
    new: str
    versions: list[tuple[str, str, str]] = field(default_factory=list)
    added_packages: list[str] = field(default_factory=list)
    removed_packages: list[str] = field(default_factory=list)
    dependency_changes: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    etc_added: list[tuple[str, str]] = field(default_factory=list)  # (path, package)
    etc_removed: list[tuple[str, str]] = field(default_factory=list)
    etc_changed: dict[str, list[str]] = field(default_factory=dict)  # path -> diff lines
    new_migrators: list[str] = field(default_factory=list)
    schema: tuple[tuple[Version | None, Version | None], tuple[Version | None, Version | None]] = (
        (None, None),
        (None, None),
    )
    new_auth_names: list[str] = field(default_factory=list)
    unknown_auth_names: list[str] = field(default_factory=list)
    added_units: list[str] = field(default_factory=list)
    removed_units: list[str] = field(default_factory=list)


def _etc(release: Release) -> dict[str, str]:
    return {p: pkg for p, pkg in release.all_files().items() if p.startswith("etc/one/")}


def analyze(old: Release, new: Release) -> Report:
    """Compare two releases."""
    report = Report(old.version, new.version)
    names = sorted(set(old.installed) | set(new.installed))
    for name in names:
        report.versions.append(
            (
                name,
                old.packages.get(name, {}).get("Version", "-"),
                new.packages.get(name, {}).get("Version", "-"),
            )
        )
    report.added_packages = sorted(set(new.packages) - set(old.packages))
    report.removed_packages = sorted(set(old.packages) - set(new.packages))

    for name in names:
        before = relations(old.packages.get(name, {}), RELATION_FIELDS, old.version)
        after = relations(new.packages.get(name, {}), RELATION_FIELDS, new.version)
        if before != after:
            report.dependency_changes[name] = (sorted(after - before), sorted(before - after))

    old_etc, new_etc = _etc(old), _etc(new)
    report.etc_added = sorted((p, new_etc[p]) for p in set(new_etc) - set(old_etc))
    report.etc_removed = sorted((p, old_etc[p]) for p in set(old_etc) - set(new_etc))
    for path in sorted(set(old_etc) & set(new_etc)):
        before_text = (old.read(path) or b"").decode("utf-8", "replace").splitlines()
        after_text = (new.read(path) or b"").decode("utf-8", "replace").splitlines()
        if before_text != after_text:
            diff = list(
                difflib.unified_diff(
                    before_text, after_text, f"{old.version}/{path}", f"{new.version}/{path}",
                    lineterm="",
                )
            )
            report.etc_changed[path] = diff

    def migrators(release: Release) -> set[str]:
        return {
            p for p in release.all_files()
            if p.startswith(ONEDB_DIR) and p.endswith(".rb") and p.count("/") > ONEDB_DIR.count("/")
        }

    report.new_migrators = sorted(migrators(new) - migrators(old))
    report.schema = (old.schema_versions(), new.schema_versions())
    new_auth = new.auth_names()
    report.new_auth_names = sorted(new_auth - old.auth_names())
    report.unknown_auth_names = sorted(
        n for n in report.new_auth_names if n not in SERVICE_AUTH_FILES and n != "one_auth"
    )
    old_units, new_units = old.units(), new.units()
    report.added_units = sorted(new_units - old_units)
    report.removed_units = sorted(old_units - new_units)
    return report


def _bullets(items: Iterable[str], empty: str) -> list[str]:
    lines = [f"- {item}" for item in items]
    return lines or [empty]


def render_markdown(report: Report) -> str:
    """The PR body section."""
    out = [
        f"## OpenNebula {report.old} -> {report.new}: release analysis",
        "",
        "Generated by `python -m ci.analyze` from the Ubuntu 24.04 apt indexes and packages.",
        f"Release notes: https://github.com/OpenNebula/one/releases/tag/release-{report.new}",
        "",
        "### Packages the image installs (with their OpenNebula dependencies)",
        "",
        f"| package | {report.old} | {report.new} |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {old} | {new} |" for name, old, new in report.versions]
    out += ["", "### Repository packages added / removed", ""]
    out += _bullets([f"added `{n}`" for n in report.added_packages]
                    + [f"removed `{n}`" for n in report.removed_packages], "No change.")
    out += ["", "### Dependency changes", ""]
    if not report.dependency_changes:
        out.append("No change (constraints that only follow the release version are ignored).")
    for name, (added, removed) in report.dependency_changes.items():
        out += [f"**{name}**", "", "```diff"]
        out += [f"+ {e}" for e in added] + [f"- {e}" for e in removed]
        out += ["```", ""]
    out += ["", "### /etc/one (every installed package)", ""]
    out += _bullets(
        [f"added `{p}` ({pkg})" for p, pkg in report.etc_added]
        + [f"removed `{p}` ({pkg})" for p, pkg in report.etc_removed]
        + [f"changed `{p}`" for p in report.etc_changed],
        "No change.",
    )
    for path, diff in report.etc_changed.items():
        shown = diff[:DIFF_LINES]
        more = len(diff) - len(shown)
        out += ["", f"<details><summary>{path}</summary>", "", "```diff", *shown]
        if more > 0:
            out.append(f"... {more} more lines")
        out += ["```", "</details>"]
    (old_db, old_local), (new_db, new_local) = report.schema
    out += ["", "### Database schema", ""]
    out.append(f"- LATEST_DB_VERSION: {old_db} -> {new_db}")
    out.append(f"- LATEST_LOCAL_DB_VERSION: {old_local} -> {new_local}")
    out += _bullets([f"new migrator `{p}`" for p in report.new_migrators],
                    "- No new onedb migrator.")
    if report.new_migrators or (old_db, old_local) != (new_db, new_local):
        out.append("- **The first start of this image runs `onedb upgrade`**: the upgrade boot "
                   "test must pass before merge.")
    out += ["", "### Service auth files", ""]
    out += _bullets([f"new name `{n}` in oned or the Ruby servers" for n in report.new_auth_names],
                    "No new `*_auth` name.")
    if report.unknown_auth_names:
        out.append("- **Not in onerun's SERVICE_AUTH_FILES**: "
                   + ", ".join(f"`{n}`" for n in report.unknown_auth_names)
                   + " (onerun/catalogue.py): check UserPool.cc and add it if oned writes it.")
    out += ["", "### Services (systemd units in the packages)", ""]
    out += _bullets([f"new `{u}`" for u in report.added_units]
                    + [f"removed `{u}`" for u in report.removed_units], "No change.")
    out += [
        "",
        "### Before merging",
        "",
        "- [ ] build, version check, boot tests (sqlite, MariaDB, restart, upgrade) and Trivy "
        "passed on this PR",
        "- [ ] new or removed services are reflected in onerun/catalogue.py and the chart",
        "- [ ] changed /etc/one files still match onerun's templates and overrides",
        "",
    ]
    return "\n".join(out)


def download_release(version: str, workdir: Path, fetch: Fetch, base: str = REPO_URL,
                     arch: str = "amd64") -> Release:
    """Fetch the apt index and unpack every installed package's .deb (SHA256-checked)."""
    body = fetch(packages_url(version, arch, base))
    if body is None:
        raise FileNotFoundError(f"no Packages index for {version} ({arch})")
    release = Release(version, parse_packages(body.decode("utf-8", "replace")))
    for name in release.installed:
        stanza = release.packages[name]
        url = f"{base}/{version}/{DISTRIBUTION}/{stanza['Filename']}"
        deb = fetch(url)
        if deb is None:
            raise FileNotFoundError(url)
        expected = stanza.get("SHA256")
        if expected and hashlib.sha256(deb).hexdigest() != expected:
            raise ValueError(f"{url}: SHA256 differs from the Packages index")
        deb_path = workdir / f"{name}_{version}.deb"
        deb_path.write_bytes(deb)
        target = workdir / version / name
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb_path), str(target)], check=True)
        deb_path.unlink()
        release.roots[name] = target
    return release


def main(argv: list[str] | None = None, fetch: Fetch = fetch_url) -> int:
    """Write the Markdown release analysis between two releases."""
    parser = argparse.ArgumentParser(prog="python -m ci.analyze", description=main.__doc__)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--base-url", default=REPO_URL)
    parser.add_argument("--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ci-analyze-") as tmp:
        work = Path(tmp)
        old = download_release(args.old, work, fetch, args.base_url)
        new = download_release(args.new, work, fetch, args.base_url)
        text = render_markdown(analyze(old, new))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
