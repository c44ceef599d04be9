"""ci.bump on a throwaway copy of the files it edits (never the real tree)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ci import bump

CHART = """\
apiVersion: v2
name: opennebula
description: >-
  OpenNebula 7 front-end run by onerun.
type: application
# chart version: patch-bumped by ci/bump.py with every OpenNebula release
version: 0.1.0
appVersion: "7.4.0"  # the OpenNebula release, also the default image tag
kubeVersion: ">=1.26.0-0"
annotations:
  artifacthub.io/images: |
    - name: opennebula
      image: ghcr.io/onerun/opennebula:7.4.0
    - name: mariadb
      image: docker.io/library/mariadb:11.4
dependencies: []
"""
README = """\
# onerun

Current release: OpenNebula <!-- one-version -->7.4.0<!-- /one-version -->, \
chart <!-- chart-version -->0.1.0<!-- /chart-version -->

`make demo` uses OpenNebula's upstream 7.4.0 configs; chart 0.1.0 was the first release.
Not a version: 17.4.0, 7.4.01, 7.4.0.1, 0.1.00.
"""
CHART_README = """\
# opennebula chart

`helm install one onerun/opennebula --version <!-- chart-version -->0.1.0<!-- /chart-version -->`
installs OpenNebula <!-- one-version -->7.4.0<!-- /one-version -->. Since 7.4.0: OneKS.
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/ONE_VERSION").write_text("7.4.0\n")
    (tmp_path / "helm/opennebula").mkdir(parents=True)
    (tmp_path / "helm/opennebula/Chart.yaml").write_text(CHART)
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "helm/opennebula/README.md").write_text(CHART_README)
    return tmp_path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_bump_edits_every_place(repo: Path) -> None:
    result = bump.bump(repo, "7.4.1")
    assert (result.old_app, result.new_app) == ("7.4.0", "7.4.1")
    assert (result.old_chart, result.new_chart) == ("0.1.0", "0.1.1")
    assert (repo / "docker/ONE_VERSION").read_text() == "7.4.1\n"

    chart_text = (repo / "helm/opennebula/Chart.yaml").read_text()
    chart = YAML(typ="safe").load(chart_text)
    assert chart["appVersion"] == "7.4.1"
    assert chart["version"] == "0.1.1"
    assert "ghcr.io/onerun/opennebula:7.4.1" in chart["annotations"]["artifacthub.io/images"]
    assert "mariadb:11.4" in chart_text
    # comments and layout survive: only the three lines changed
    changed = [
        (a, b) for a, b in zip(CHART.splitlines(), chart_text.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        ("version: 0.1.0", "version: 0.1.1"),
        ('appVersion: "7.4.0"  # the OpenNebula release, also the default image tag',
         'appVersion: "7.4.1"  # the OpenNebula release, also the default image tag'),
        ("      image: ghcr.io/onerun/opennebula:7.4.0",
         "      image: ghcr.io/onerun/opennebula:7.4.1"),
    ]

    readme = (repo / "README.md").read_text()
    assert ("Current release: OpenNebula <!-- one-version -->7.4.1<!-- /one-version -->, "
            "chart <!-- chart-version -->0.1.1<!-- /chart-version -->\n") in readme
    # Unmarked prose keeps its numbers: they are history or examples, not the current release.
    assert "upstream 7.4.0 configs; chart 0.1.0 was the first release." in readme
    assert "Not a version: 17.4.0, 7.4.01, 7.4.0.1, 0.1.00." in readme
    chart_readme = (repo / "helm/opennebula/README.md").read_text()
    assert "--version <!-- chart-version -->0.1.1<!-- /chart-version -->" in chart_readme
    assert "<!-- one-version -->7.4.1<!-- /one-version -->. Since 7.4.0: OneKS." in chart_readme
    assert set(result.changed) == {
        repo / "docker/ONE_VERSION", repo / "helm/opennebula/Chart.yaml", repo / "README.md",
        repo / "helm/opennebula/README.md",
    }


def test_a_marked_version_that_disagrees_is_refused(repo: Path) -> None:
    readme = repo / "README.md"
    readme.write_text(README.replace("-->7.4.0<!--", "-->7.2.0<!--"))
    before = snapshot(repo)
    with pytest.raises(bump.BumpError, match=r"marks one-version '7\.2\.0'"):
        bump.bump(repo, "7.4.1")
    assert snapshot(repo) == before


@pytest.mark.parametrize("target", ["7.4.0", "7.3.9", "7.4", "7.4.1-rc1", "latest"])
def test_refusals_change_nothing(repo: Path, target: str) -> None:
    before = snapshot(repo)
    with pytest.raises(bump.BumpError):
        bump.bump(repo, target)
    assert snapshot(repo) == before


def test_disagreeing_pin_and_chart_is_refused(repo: Path) -> None:
    (repo / "docker/ONE_VERSION").write_text("7.2.0\n")
    before = snapshot(repo)
    with pytest.raises(bump.BumpError, match=r"appVersion 7\.4\.0 differs"):
        bump.bump(repo, "7.4.1")
    assert snapshot(repo) == before


def test_non_semver_chart_version_is_refused(repo: Path) -> None:
    chart = repo / "helm/opennebula/Chart.yaml"
    chart.write_text(CHART.replace("version: 0.1.0", "version: 0.1.0-alpha.1"))
    with pytest.raises(bump.BumpError, match=r"not X\.Y\.Z"):
        bump.bump(repo, "7.4.1")
    assert (repo / "docker/ONE_VERSION").read_text() == "7.4.0\n"


def test_main_reports_and_exits(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bump.main(["7.5.0", "--repo", str(repo)]) == 0
    assert "OpenNebula 7.4.0 -> 7.5.0, chart 0.1.0 -> 0.1.1" in capsys.readouterr().out
    assert bump.main(["7.5.0", "--repo", str(repo)]) == 1
    assert "bump refused: 7.5.0 is not newer" in capsys.readouterr().err


def test_readme_is_optional(repo: Path) -> None:
    (repo / "README.md").unlink()
    result = bump.bump(repo, "7.4.1")
    assert repo / "README.md" not in result.changed


def test_the_real_tree_is_bumpable_and_marks_its_current_release() -> None:
    """The repository's own README carries the markers with the pinned values (planned only:
    nothing is written)."""
    root = Path(__file__).resolve().parents[2]
    current = (root / "docker/ONE_VERSION").read_text().strip()
    major, minor, patch = current.split(".")
    result, edits = bump.plan_bump(root, f"{major}.{minor}.{int(patch) + 1}")
    assert root / "README.md" in edits
    assert f"<!-- one-version -->{result.new_app}<!-- /one-version -->" in edits[root / "README.md"]
    assert f"<!-- chart-version -->{result.new_chart}<!-- /chart-version -->" in edits[
        root / "README.md"
    ]
