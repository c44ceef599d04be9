"""The release gates in the workflows, read as data (actionlint checks syntax, not intent).

These workflows cannot run here; what is checked is that each gate is wired: the chart is
released only from a green build and test run of the exact commit, pinned to that commit's
image; the upgrade boot test cannot be skipped by a missing image; the suite runs in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
from ruamel.yaml import YAML

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOWS = PROJECT / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe", pure=True).load((WORKFLOWS / name).read_text())
    return data


def triggers(flow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    on: dict[str, Any] = flow.get("on", flow.get(True))
    return on


def steps(flow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = flow["jobs"][job]["steps"]
    return found


def test_chart_release_runs_only_after_green_build_and_test_of_the_commit() -> None:
    flow = workflow("release-chart.yml")
    on = triggers(flow)
    assert set(on) == {"workflow_run", "workflow_dispatch"}  # no push trigger bypassing build
    assert set(on["workflow_run"]["workflows"]) == {"build", "test"}
    job = flow["jobs"]["release"]
    assert "github.event.workflow_run.conclusion == 'success'" in job["if"]
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert "github.event.workflow_run.head_sha" in checkout["with"]["ref"]
    assert "github.event.workflow_run.head_sha" in job["env"]["SHA"]
    decide = next(s for s in job["steps"] if s.get("id") == "decide")["run"]
    assert "green build.yml" in decide and "green test.yml" in decide
    assert "--commit \"$SHA\"" in decide
    assert "org.opencontainers.image.revision" in decide and '!= "$SHA"' in decide
    publish = next(s for s in job["steps"] if s.get("name", "").startswith("Package"))["run"]
    assert '--target "$SHA"' in publish
    assert ".image.digest = strenv(DIGEST)" in publish


def test_build_pushes_the_immutable_tag_the_release_checks() -> None:
    flow = workflow("build.yml")
    push = next(s for s in steps(flow, "publish") if s.get("id") == "push")["run"]
    assert '-t "$IMAGE:$TAG"' in push
    build = next(s for s in steps(flow, "image") if s.get("name") == "Build")
    labels = build["with"]["labels"]
    assert "org.opencontainers.image.revision=${{ needs.meta.outputs.sha }}" in labels
    release = workflow("release-chart.yml")["jobs"]["release"]["steps"]
    decide = next(s for s in release if s.get("id") == "decide")["run"]
    assert 'ref="$image:$app-${SHA::12}"' in decide
    meta = next(s for s in steps(flow, "meta") if s.get("id") == "meta")["run"]
    assert 'sha="$GITHUB_SHA"' in meta and 'tag="$version-${sha::12}"' in meta
    # Only the weekly rebuild builds another commit (the current release's) and adds a suffix.
    rebuild = meta[meta.index('if [ "$EVENT" = schedule ]'):]
    assert 'sha="$(gh release view' in rebuild and 'tag="$tag-r' in rebuild


def test_upgrade_boot_test_needs_no_credential_and_never_skips_silently() -> None:
    image_steps = steps(workflow("build.yml"), "image")
    assert not [s for s in image_steps if "login" in str(s.get("uses", "")) + str(s.get("run", ""))]
    names = [s.get("name") or s.get("uses", "") for s in image_steps]
    script = image_steps[names.index("Boot tests")]["run"]
    assert "2>&1" not in script.split("docker manifest inspect")[1].split("\n")[0]
    assert "exit 1" in script and 'if [ "$FIRST_RELEASE" = "true" ]' in script
    assert "BOOT_FIRST_RELEASE=1" in script


def test_the_test_suite_runs_on_pull_requests_and_pushes() -> None:
    flow = workflow("test.yml")
    on = triggers(flow)
    assert "pull_request" in on and "push" in on
    runs = [s.get("run", "") for s in steps(flow, "test")]
    assert any(r.strip().endswith("make test") for r in runs)


def test_release_uses_the_helm_the_chart_tests_use() -> None:
    release = workflow("release-chart.yml")["jobs"]["release"]["steps"]
    setup = next(s for s in release if s.get("uses", "").startswith("azure/setup-helm"))
    assert setup["with"]["version"] == helm_python.EXPECTED_HELM_SDK_VERSION
    # Helm v4 validates values with JSON Schema drafts 4 to 2020-12; v3 before 3.18 did not
    # know 2020-12.
    schema = json.loads((PROJECT / "helm/opennebula/values.schema.json").read_text())
    assert schema["$schema"] in {
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema#",
    }
