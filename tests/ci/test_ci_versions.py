"""ci.versions on a handwritten Apache index page (tests/ci/data/repo-index.html): the real
listing of downloads.opennebula.io cannot be downloaded here."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci import versions
from onerun.versions import Version

DATA = Path(__file__).parent / "data"
INDEX = (DATA / "repo-index.html").read_text()
BASE = versions.REPO_URL


def V(text: str) -> Version:
    return Version.parse(text)


class FakeRepo:
    """Serves the recorded index and a Packages index for the releases given, 404 otherwise."""

    def __init__(self, published: dict[str, tuple[str, ...]]) -> None:
        self.published = published  # version -> architectures with packages
        self.requested: list[str] = []

    def __call__(self, url: str) -> bytes | None:
        self.requested.append(url)
        if url == BASE + "/":
            return INDEX.encode()
        for version, arches in self.published.items():
            for arch in arches:
                if url == versions.packages_url(version, arch):
                    return (DATA / "Packages-7.4.0").read_bytes()
        return None


def test_parse_index_finds_release_directories_only() -> None:
    found = [str(v) for v in versions.parse_index(INDEX)]
    assert found == [
        "6.8.0", "6.10.0", "6.99.80", "7.0.0", "7.0.1", "7.1.80", "7.2.0", "7.3.80",
        "7.3.85", "7.4.0", "7.4.1", "7.5.80",
    ]


def test_prereleases_are_patch_80_and_above() -> None:
    assert versions.is_stable(V("7.4.1"))
    assert versions.is_stable(V("7.3.79"))
    assert not versions.is_stable(V("7.3.80"))
    assert not versions.is_stable(V("7.5.85"))


def test_newest_stable_above_pin() -> None:
    available = versions.parse_index(INDEX)
    assert versions.newest_above(available, V("7.0.1"), lambda v: True) == V("7.4.1")
    assert versions.newest_above(available, V("7.4.0"), lambda v: True) == V("7.4.1")


def test_up_to_date_pin_and_betas_give_nothing() -> None:
    available = versions.parse_index(INDEX)
    assert versions.newest_above(available, V("7.4.1"), lambda v: True) is None


def test_never_moves_backwards() -> None:
    available = versions.parse_index(INDEX)
    assert versions.newest_above(available, V("7.6.0"), lambda v: True) is None


def test_skips_a_listed_release_without_ubuntu_packages() -> None:
    available = versions.parse_index(INDEX)
    chosen = versions.newest_above(available, V("7.0.0"), lambda v: v != V("7.4.1"))
    assert chosen == V("7.4.0")


def test_numeric_not_lexical_order() -> None:
    listing = '<a href="7.9.0/">7.9.0/</a> <a href="7.10.0/">7.10.0/</a>'
    assert versions.newest_above(versions.parse_index(listing), V("7.4.0"),
                                 lambda v: True) == V("7.10.0")


def test_main_newest_prints_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pin = tmp_path / "ONE_VERSION"
    pin.write_text("7.2.0\n")
    repo = FakeRepo({"7.4.0": ("amd64",)})  # 7.4.1 is listed but has no packages yet
    assert versions.main(["newest", "--pin-file", str(pin)], fetch=repo) == 0
    assert capsys.readouterr().out == "7.4.0\n"
    assert versions.packages_url("7.4.1", "amd64") in repo.requested


def test_main_newest_prints_nothing_when_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = tmp_path / "ONE_VERSION"
    pin.write_text("7.4.1\n")
    assert versions.main(["newest", "--pin-file", str(pin)],
                         fetch=FakeRepo({"7.4.1": ("amd64",)})) == 0
    assert capsys.readouterr().out == ""


def test_platforms_follow_published_architectures(capsys: pytest.CaptureFixture[str]) -> None:
    both = FakeRepo({"7.4.0": ("amd64", "arm64")})
    assert versions.main(["platforms", "7.4.0"], fetch=both) == 0
    assert capsys.readouterr().out == "linux/amd64,linux/arm64\n"
    amd_only = FakeRepo({"7.4.0": ("amd64",)})
    assert versions.platforms("7.4.0", amd_only) == ["linux/amd64"]
    assert versions.main(["platforms", "7.9.0"], fetch=amd_only) == 1


def test_publishes_needs_the_opennebula_package() -> None:
    def fetch(url: str) -> bytes:
        return b"Package: opennebula-node-kvm\nVersion: 7.4.0-1\n"

    assert not versions.publishes("7.4.0", "amd64", fetch)


def test_fetch_refuses_plain_http() -> None:
    with pytest.raises(ValueError, match="non-https"):
        versions.fetch_url("http://downloads.opennebula.io/repo/")
