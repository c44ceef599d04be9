"""Discover OpenNebula releases from the repository's directory listing.

The listing at https://downloads.opennebula.io/repo/ is an Apache index page with one
``<a href="X.Y.Z/">`` link per release; betas and release candidates use patch numbers of
80 and above (7.3.80). A listed release is only a candidate when its Ubuntu 24.04 apt index
exists: the listing alone does not promise CE packages for our distribution.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from onerun.versions import Version

REPO_URL = "https://downloads.opennebula.io/repo"
DISTRIBUTION = "Ubuntu/24.04"
ARCHITECTURES = {"amd64": "linux/amd64", "arm64": "linux/arm64"}
PRERELEASE_PATCH = 80  # 7.3.80, 7.3.85 ... are betas and release candidates

_LINK = re.compile(r"""<a\s[^>]*href\s*=\s*["'](\d+\.\d+\.\d+)/["']""", re.IGNORECASE)

# url -> body, or None when the server answers 404; anything else raises.
Fetch = Callable[[str], bytes | None]


def fetch_url(url: str, timeout: float = 30.0) -> bytes | None:
    """GET ``url``; None on 404 so 'not published' is distinguishable from 'unreachable'."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing a non-https URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https only
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def parse_index(html: str) -> list[Version]:
    """Every X.Y.Z directory linked from an Apache index page, sorted, without duplicates."""
    return sorted({Version.parse(match) for match in _LINK.findall(html)})


def is_stable(version: Version) -> bool:
    """Whether ``version`` is a release rather than a beta or RC (patch >= 80)."""
    return len(version.parts) == 3 and version.parts[2] < PRERELEASE_PATCH


def packages_url(version: Version | str, arch: str = "amd64", base: str = REPO_URL) -> str:
    """The apt Packages index of one release and architecture."""
    return f"{base}/{version}/{DISTRIBUTION}/dists/stable/opennebula/binary-{arch}/Packages"


def publishes(version: Version | str, arch: str, fetch: Fetch, base: str = REPO_URL) -> bool:
    """Whether the release has an opennebula package for Ubuntu 24.04 on ``arch``."""
    body = fetch(packages_url(version, arch, base))
    return body is not None and b"\nPackage: opennebula\n" in b"\n" + body


def newest_above(
    available: Iterable[Version], pin: Version, has_packages: Callable[[Version], bool]
) -> Version | None:
    """The newest stable release above ``pin`` with packages; never a downgrade."""
    for version in sorted((v for v in available if is_stable(v) and v > pin), reverse=True):
        if has_packages(version):
            return version
    return None


def platforms(version: Version | str, fetch: Fetch, base: str = REPO_URL) -> list[str]:
    """Docker platforms to build: the architectures upstream publishes this release for."""
    return [plat for arch, plat in ARCHITECTURES.items() if publishes(version, arch, fetch, base)]


def read_pin(path: Path) -> Version:
    """The pinned release (docker/ONE_VERSION)."""
    return Version.parse(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None, fetch: Fetch = fetch_url) -> int:
    """``newest``: print the release to bump to (nothing when up to date);
    ``platforms VERSION``: print the comma-separated docker platforms."""
    parser = argparse.ArgumentParser(prog="python -m ci.versions", description=main.__doc__)
    parser.add_argument("--base-url", default=REPO_URL)
    sub = parser.add_subparsers(dest="command", required=True)
    newest = sub.add_parser("newest")
    newest.add_argument("--pin-file", type=Path, default=Path("docker/ONE_VERSION"))
    plat = sub.add_parser("platforms")
    plat.add_argument("version")
    args = parser.parse_args(argv)

    if args.command == "platforms":
        found = platforms(Version.parse(args.version), fetch, args.base_url)
        if not found:
            print(f"no Ubuntu 24.04 packages published for {args.version}", file=sys.stderr)
            return 1
        print(",".join(found))
        return 0

    index = fetch(args.base_url + "/")
    if index is None:
        print(f"{args.base_url}/ answered 404", file=sys.stderr)
        return 1
    pin = read_pin(args.pin_file)
    target = newest_above(
        parse_index(index.decode("utf-8", "replace")),
        pin,
        lambda v: publishes(v, "amd64", fetch, args.base_url),
    )
    if target is not None:
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
