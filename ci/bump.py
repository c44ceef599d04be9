"""Move the whole repository to a new OpenNebula release with one command.

Edits docker/ONE_VERSION, the chart's appVersion (and a patch bump of its version, since
a chart whose default image changed is a new chart release), other mentions of the old
release in Chart.yaml (the image in artifacthub.io/images), and, in README.md and the
chart's README.md, only the versions inside markers:
``<!-- one-version -->7.4.0<!-- /one-version -->`` and
``<!-- chart-version -->0.1.0<!-- /chart-version -->``. Other version numbers in prose (an
example, a history note) are never touched. Lines are edited in place so Chart.yaml keeps its
comments and layout.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from onerun.versions import Version

ONE_VERSION_FILE = Path("docker/ONE_VERSION")
CHART_FILE = Path("helm/opennebula/Chart.yaml")
README_FILES = (Path("README.md"), Path("helm/opennebula/README.md"))

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_MARKED = re.compile(
    r"<!-- (?P<kind>one-version|chart-version) -->(?P<value>[^<]*)<!-- /(?P=kind) -->"
)


class BumpError(Exception):
    """The repository is not in a state the bump understands; nothing was written."""


@dataclass(frozen=True)
class BumpResult:
    """What changed, for the workflow log and the PR body."""

    old_app: str
    new_app: str
    old_chart: str
    new_chart: str
    changed: tuple[Path, ...]


def next_patch(version: str) -> str:
    """0.3.1 -> 0.3.2. Chart versions must be plain SemVer here."""
    match = _SEMVER.match(version)
    if not match:
        raise BumpError(f"chart version {version!r} is not X.Y.Z; bump it by hand once")
    major, minor, patch = (int(part) for part in match.groups())
    return f"{major}.{minor}.{patch + 1}"


def _top_level_key(text: str, key: str) -> tuple[re.Match[str], str]:
    """The single top-level ``key:`` line of a YAML mapping and its unquoted value."""
    pattern = re.compile(
        rf"^(?P<head>{key}:[ \t]*)(?P<q>[\"']?)(?P<value>[^\"'#\s]+)(?P=q)"
        r"(?P<tail>[ \t]*(?:#.*)?)$",
        re.MULTILINE,
    )
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        raise BumpError(f"expected one top-level '{key}:' in {CHART_FILE}, found {len(matches)}")
    return matches[0], matches[0]["value"]


def _replace_value(text: str, match: re.Match[str], value: str) -> str:
    # The original quoting is kept; X.Y.Z is a string in YAML either way.
    line = f"{match['head']}{match['q']}{value}{match['q']}{match['tail']}"
    return text[: match.start()] + line + text[match.end() :]


def _replace_token(text: str, old: str, new: str) -> tuple[str, int]:
    """Replace whole version tokens only: 7.4.0 must not touch 17.4.0 or 7.4.0.1."""
    pattern = re.compile(rf"(?<![\d.]){re.escape(old)}(?!\d|\.\d)")
    return pattern.subn(new, text)


def _replace_marked(text: str, where: Path, versions: dict[str, tuple[str, str]]) -> str:
    """Replace the versions inside markers; ``versions`` maps marker kind to (old, new).
    A marked version that is not the old one means the file disagrees with the pin."""

    def replace(match: re.Match[str]) -> str:
        old, new = versions[match["kind"]]
        if match["value"] != old:
            raise BumpError(
                f"{where} marks {match['kind']} {match['value']!r}, but the current one is "
                f"{old}; make them agree first"
            )
        return match[0].replace(f"-->{old}<!--", f"-->{new}<!--", 1)

    return _MARKED.sub(replace, text)


def _check_chart(text: str, app: str, version: str) -> None:
    """Parse the edited Chart.yaml: the line edits must yield exactly the intended values."""
    data = YAML(typ="safe").load(text)
    if str(data.get("appVersion")) != app or str(data.get("version")) != version:
        raise BumpError(f"editing {CHART_FILE} did not yield appVersion {app}, version {version}")


def plan_bump(repo: Path, new_app: str) -> tuple[BumpResult, dict[Path, str]]:
    """Compute every edit without writing, so a failure leaves the tree untouched."""
    if not _SEMVER.match(new_app):
        raise BumpError(f"{new_app!r} is not an X.Y.Z release")
    pin_path = repo / ONE_VERSION_FILE
    old_app = pin_path.read_text(encoding="utf-8").strip()
    if Version.parse(new_app) <= Version.parse(old_app):
        raise BumpError(f"{new_app} is not newer than the pinned {old_app}; bumps move forward")

    chart_path = repo / CHART_FILE
    chart = chart_path.read_text(encoding="utf-8")
    app_match, chart_app = _top_level_key(chart, "appVersion")
    if chart_app != old_app:
        raise BumpError(
            f"{CHART_FILE} appVersion {chart_app} differs from {ONE_VERSION_FILE} {old_app}; "
            "make them agree first"
        )
    chart = _replace_value(chart, app_match, new_app)
    version_match, old_chart = _top_level_key(chart, "version")
    new_chart = next_patch(old_chart)
    chart = _replace_value(chart, version_match, new_chart)
    # Other mentions of the release, e.g. the image tag in artifacthub.io/images.
    chart, _ = _replace_token(chart, old_app, new_app)
    _check_chart(chart, new_app, new_chart)

    edits = {pin_path: new_app + "\n", chart_path: chart}
    versions = {"one-version": (old_app, new_app), "chart-version": (old_chart, new_chart)}
    for readme_file in README_FILES:
        readme_path = repo / readme_file
        if readme_path.exists():
            readme = readme_path.read_text(encoding="utf-8")
            edits[readme_path] = _replace_marked(readme, readme_file, versions)
    changed = tuple(
        path for path, text in edits.items() if text != path.read_text(encoding="utf-8")
    )
    result = BumpResult(old_app, new_app, old_chart, new_chart, changed)
    return result, {path: edits[path] for path in changed}


def bump(repo: Path, new_app: str) -> BumpResult:
    """Apply the bump to the working tree at ``repo``."""
    result, edits = plan_bump(repo, new_app)
    for path, text in edits.items():
        path.write_text(text, encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    """Bump the repository to a new OpenNebula release."""
    parser = argparse.ArgumentParser(prog="python -m ci.bump", description=main.__doc__)
    parser.add_argument("version", help="the new OpenNebula release, X.Y.Z")
    parser.add_argument("--repo", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    try:
        result = bump(args.repo, args.version)
    except (BumpError, ValueError, OSError) as exc:
        print(f"bump refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"OpenNebula {result.old_app} -> {result.new_app}, "
        f"chart {result.old_chart} -> {result.new_chart}"
    )
    for path in result.changed:
        print(f"  changed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
