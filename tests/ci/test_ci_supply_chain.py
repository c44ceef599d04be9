"""Supply-chain rules of the workflows, the Dockerfile and the Renovate config, read as data.

The workflows cannot run here (no GitHub); actionlint checks their syntax. These tests check
the rules a reviewer would otherwise check by eye, for every workflow, including ones added
later: actions pinned to commits, least-privilege tokens, no credentials where third-party
code or pull requests run, no expression injection into shell scripts, bounded jobs, base
images pinned by digest and kept current by Renovate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))
RENOVATE = PROJECT / ".github" / "renovate.json"
DOCKERFILE = PROJECT / "docker" / "Dockerfile"

SHA_PIN = re.compile(
    r"^\s*(?:-\s+)?uses:\s*(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)"
    r"(?:\s+#\s*(?P<comment>\S+))?\s*$"
)
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
FIRST_PARTY = ("actions/", "github/")  # GitHub's own actions
SCANNERS = ("aquasecurity/trivy-action", "anchore/sbom-action")
LOGIN = re.compile(r"\b(docker|helm registry|cosign|oras)\s+login\b")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(path.read_text())
    return data


def triggers(flow: dict[str, Any]) -> dict[str, Any]:
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads the key `on` as True
    return on if isinstance(on, dict) else {name: None for name in ([on] if isinstance(on, str)
                                                                    else on)}


def jobs(path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load(path)["jobs"]
    return found


def uses(step: dict[str, Any]) -> str:
    return str(step.get("uses", "")).split("@")[0]


def is_login(step: dict[str, Any]) -> bool:
    return uses(step) == "docker/login-action" or bool(LOGIN.search(str(step.get("run", ""))))


def is_scan(step: dict[str, Any]) -> bool:
    return uses(step) in SCANNERS or bool(re.search(r"\btrivy\s", str(step.get("run", ""))))


def writes(permissions: Any) -> set[str]:
    if isinstance(permissions, str):
        return {"*"} if permissions == "write-all" else set()
    return {scope for scope, level in (permissions or {}).items() if level == "write"}


def test_there_are_workflows_to_check() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"build.yml", "test.yml", "release-chart.yml", "version-watch.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version_in_a_comment(path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert lines, f"{path.name} uses no action"
    for line in lines:
        match = SHA_PIN.match(line)
        assert match, f"{path.name}: cannot read {line.strip()!r}"
        assert re.fullmatch(r"[0-9a-f]{40}", match["ref"]), (
            f"{path.name}: {match['action']}@{match['ref']} is not a full commit SHA")
        assert match["comment"] and EXACT_VERSION.match(match["comment"]), (
            f"{path.name}: {match['action']} needs its exact version in a comment, e.g. # v1.2.3")


def test_one_action_one_pin_across_workflows() -> None:
    pins: dict[str, set[tuple[str, str]]] = {}
    for path in WORKFLOWS:
        for match in filter(None, map(SHA_PIN.match, path.read_text().splitlines())):
            pins.setdefault(match["action"], set()).add((match["ref"], match["comment"] or ""))
    assert {a: p for a, p in pins.items() if len(p) > 1} == {}


def test_trivy_action_is_a_release_after_the_march_2026_compromise() -> None:
    """Every trivy-action tag before 0.35.0 was repointed to credential-stealing code
    (aquasecurity/trivy-action#541, GHSA-69fq-xp46-6x23)."""
    found = []
    for path in WORKFLOWS:
        for match in filter(None, map(SHA_PIN.match, path.read_text().splitlines())):
            if match["action"] == "aquasecurity/trivy-action":
                version = tuple(int(x) for x in match["comment"].lstrip("v").split("."))
                found.append(version)
                assert version >= (0, 35, 0), f"{path.name}: trivy-action {match['comment']}"
    assert found, "the image is no longer scanned with trivy-action"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_tokens_start_with_no_permission_and_every_job_says_what_it_needs(path: Path) -> None:
    flow = load(path)
    assert flow.get("permissions") == {}, f"{path.name}: top-level `permissions: {{}}`"
    for name, job in jobs(path).items():
        assert isinstance(job.get("permissions"), dict), f"{path.name}/{name}: no permissions"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_job_has_a_timeout(path: Path) -> None:
    for name, job in jobs(path).items():
        minutes = job.get("timeout-minutes")
        assert isinstance(minutes, int) and 0 < minutes <= 180, f"{path.name}/{name}: {minutes}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_pull_request_runs_never_hold_a_write_token(path: Path) -> None:
    on = triggers(load(path))
    assert "pull_request_target" not in on, f"{path.name}: pull_request_target"
    if "pull_request" not in on:
        return
    for name, job in jobs(path).items():
        if writes(job.get("permissions")):
            condition = str(job.get("if", ""))
            assert "github.event_name != 'pull_request'" in condition, (
                f"{path.name}/{name} has write permissions and can run on a pull request")
            assert "||" not in condition, f"{path.name}/{name}: `||` can re-admit pull requests"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkout_never_leaves_the_token_in_git_config(path: Path) -> None:
    for name, job in jobs(path).items():
        for step in job.get("steps", []):
            if uses(step) == "actions/checkout":
                assert (step.get("with") or {}).get("persist-credentials") is False, (
                    f"{path.name}/{name}: checkout without persist-credentials: false")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_interpolated_into_a_shell_script(path: Path) -> None:
    """`${{ }}` in `run:` is pasted into the script before the shell sees it: a branch name or
    an input becomes code. Values reach scripts through `env:`."""
    for name, job in jobs(path).items():
        for step in job.get("steps", []):
            assert "${{" not in str(step.get("run", "")), (
                f"{path.name}/{name}/{step.get('name', step.get('id'))}: use env:")


def needs(all_jobs: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Every job ``name`` waits for, transitively."""
    direct = all_jobs[name].get("needs", [])
    found = set([direct] if isinstance(direct, str) else direct)
    for other in list(found):
        found |= needs(all_jobs, other)
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_registry_login_only_in_the_push_job_after_every_scan(path: Path) -> None:
    all_jobs = jobs(path)
    scanning = {n for n, j in all_jobs.items() if any(map(is_scan, j.get("steps", [])))}
    for name, job in all_jobs.items():
        steps = job.get("steps", [])
        logins = [i for i, s in enumerate(steps) if is_login(s)]
        if "packages" in writes(job.get("permissions")):
            assert logins, f"{path.name}/{name} may write packages but never logs in"
        if not logins:
            continue
        assert "packages" in writes(job.get("permissions")) or "contents" in writes(
            job.get("permissions")), f"{path.name}/{name}: a login in a job that pushes nothing"
        assert scanning - {name} <= needs(all_jobs, name), (
            f"{path.name}/{name} logs in before the scans of {scanning - needs(all_jobs, name)}")
        for step in steps[logins[0]:]:
            assert not is_scan(step), f"{path.name}/{name}: a scan after the login"
            action = uses(step)
            assert not action or action.startswith(FIRST_PARTY), (
                f"{path.name}/{name}: third-party {action} runs after the registry login")


def test_scanning_jobs_hold_no_write_token() -> None:
    for path in WORKFLOWS:
        for name, job in jobs(path).items():
            if any(map(is_scan, job.get("steps", []))):
                assert writes(job.get("permissions")) == set(), f"{path.name}/{name}"


# --- provenance: build.yml ---------------------------------------------------------------

BUILD = PROJECT / ".github" / "workflows" / "build.yml"


def steps_of(job: str, path: Path = BUILD) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = jobs(path)[job]["steps"]
    return found


def scripts(job: str, path: Path = BUILD) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps_of(job, path))


def test_the_pushed_image_is_signed_and_attested_keylessly() -> None:
    push = jobs(BUILD)["publish"]
    assert push["permissions"]["id-token"] == "write"  # GitHub OIDC for Sigstore
    assert {"image", "chart"} <= needs(jobs(BUILD), "publish")
    script = scripts("publish")
    assert re.search(r"cosign sign --yes --recursive \"\$IMAGE@\$digest\"", script)
    assert re.search(r"cosign attest --yes --type spdxjson --predicate \"[^\"]+\" "
                     r"\"\$IMAGE@\$platform_digest\"", script)
    attest = next(s for s in steps_of("publish") if uses(s) == "actions/attest")
    assert attest["with"]["push-to-registry"] is True
    assert "digest" in attest["with"]["subject-digest"]
    assert "--key" not in script  # keyless only


def test_publish_pushes_exactly_the_images_the_image_job_tested() -> None:
    image = scripts("image")
    assert "docker save" in image and 'docker image inspect -f "{{.Id}}"' in image
    publish = scripts("publish")
    assert "docker load" in publish
    assert "is not the tested image" in publish  # the ID check before anything is pushed


def test_a_weekly_rebuild_picks_up_base_image_fixes_and_gets_a_new_tag() -> None:
    on = triggers(load(BUILD))
    assert re.fullmatch(r"\d+ \d+ \* \* [0-6]", on["schedule"][0]["cron"])  # weekly
    meta = scripts("meta")
    assert "imagetools inspect" in meta and "BASE_IMAGE" in meta  # the newest base digest
    assert 'gh release view' in meta  # the commit of the current release
    build = next(s for s in steps_of("image") if s.get("name") == "Build")
    assert "schedule" in build["with"]["no-cache"]
    assert "BASE_IMAGE" in build["with"]["build-args"]
    assert "-r$(date -u +%Y%m%d)" in meta  # a revision tag of its own


def test_the_chart_is_installed_on_a_kind_cluster_with_the_tested_image() -> None:
    chart = jobs(BUILD)["chart"]
    assert "image" in needs(jobs(BUILD), "chart")
    actions = [uses(s) for s in chart["steps"]]
    assert "helm/kind-action" in actions and "helm/chart-testing-action" in actions
    script = scripts("chart")
    assert "kind load image-archive" in script
    assert re.search(r"ct lint .*--check-version-increment=\"\$check_version\"", script)
    assert "ct install" in script and "image.pullPolicy=Never" in script
    assert script.count("helm test") >= 2  # the previous release, then the upgrade
    assert "helm upgrade" in script and "--cascade=orphan" in script


def test_the_chart_is_pushed_as_a_signed_oci_artifact() -> None:
    release = PROJECT / ".github" / "workflows" / "release-chart.yml"
    script = scripts("release", release)
    assert re.search(r"helm push \S+ \"oci://", script)
    assert re.search(r"cosign sign --yes \"\$chart_ref@\$chart_digest\"", script)
    assert jobs(release)["release"]["permissions"]["id-token"] == "write"


# --- Dockerfile and Renovate -------------------------------------------------------------

DIGEST_ARG = re.compile(r"^ARG (?P<name>[A-Z_]+_IMAGE)=(?P<ref>\S+)$", re.MULTILINE)


def test_every_base_image_is_pinned_by_digest() -> None:
    text = DOCKERFILE.read_text()
    pinned = {m["name"]: m["ref"] for m in DIGEST_ARG.finditer(text)}
    assert pinned, "no base image ARG"
    for name, ref in pinned.items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", ref), f"{name}={ref}"
    stages: set[str] = set()
    for line in re.findall(r"^FROM .+$", text, re.MULTILINE):
        parts = line.split()
        source = parts[1]
        variable = re.fullmatch(r"\$\{?([A-Z_]+)\}?", source)
        # The image stage picks its OpenNebula stage by ONE_SOURCE: both must be stages.
        sources = {source.replace("${ONE_SOURCE}", v) for v in ("packages", "tree")}
        assert sources <= stages or (variable and variable[1] in pinned), line
        if len(parts) == 4 and parts[2].upper() == "AS":
            stages.add(parts[3])


def test_the_image_runs_as_oneadmin_by_default() -> None:
    """The stage whose entrypoint is `onerun start` (the released image) ends as uid 9869."""
    stages = re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.MULTILINE)
    runtime = [s for s in stages if 'ENTRYPOINT ["onerun", "start"]' in s]
    assert len(runtime) == 1, "one stage has onerun start as its entrypoint"
    users = re.findall(r"^USER (\S+)$", runtime[0], re.MULTILINE)
    assert users and users[-1] == "9869", "the runtime stage's last USER must be 9869"


def renovate() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RENOVATE.read_text())
    return data


def renovate_patterns(file: str) -> list[re.Pattern[str]]:
    """The custom regex managers that apply to ``file``, compiled for Python."""
    found = []
    for manager in renovate().get("customManagers", []):
        files = [p.strip("/") for p in manager["managerFilePatterns"]]
        if any(re.search(p, file) for p in files):
            for pattern in manager["matchStrings"]:
                found.append(re.compile(pattern.replace("(?<", "(?P<")))
    return found


@pytest.mark.parametrize(("file", "pins"), [
    ("docker/Dockerfile", r"^ARG [A-Z_]+_IMAGE=.*$"),
    ("helm/opennebula/values.yaml", r"^\s+digest: \"sha256:[0-9a-f]{64}\"$"),
    ("helm/opennebula/Chart.yaml", r"^\s+image: \S+@sha256:[0-9a-f]{64}$"),
])
def test_renovate_keeps_every_digest_pin_current(file: str, pins: str) -> None:
    text = (PROJECT / file).read_text()
    expected = re.findall(pins, text, re.MULTILINE)
    assert expected, f"no digest pin found in {file}"
    patterns = renovate_patterns(file)
    matched = [m for p in patterns for m in p.finditer(text)]
    assert len(matched) == len(expected), f"{file}: Renovate matches {len(matched)} of {expected}"
    for match in matched:
        groups = match.groupdict()
        assert groups["depName"] and groups["currentValue"]
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", groups["currentDigest"])
    assert all(m.get("datasourceTemplate") == "docker"
               for m in renovate()["customManagers"])


def test_renovate_pins_and_updates_the_actions() -> None:
    config = renovate()
    assert "helpers:pinGitHubActionDigests" in config["extends"]
    assert "github-actions" in config["enabledManagers"]
    # Ubuntu stays on 24.04 (OpenNebula's packages are built for it); only its digest moves.
    ubuntu = next(r for r in config["packageRules"]
                  if "docker.io/library/ubuntu" in r.get("matchPackageNames", []))
    assert ubuntu["enabled"] is False and "digest" not in ubuntu["matchUpdateTypes"]


def test_the_release_docs_show_the_verification_of_what_the_workflows_sign() -> None:
    text = (PROJECT / "docs" / "release.md").read_text()
    for workflow in ("build.yml", "release-chart.yml"):
        assert "cosign sign --yes" in (PROJECT / ".github" / "workflows" / workflow).read_text()
        identity = f'.github/workflows/{workflow}@refs/heads/main"'
        assert identity in text, f"docs/release.md: no cosign verify for {workflow}'s identity"
    for command in ("cosign verify \"$IMAGE", "cosign verify-attestation --type spdxjson",
                    "gh attestation verify \"oci://$IMAGE", "gh attestation verify opennebula-",
                    "helm verify opennebula-"):
        assert command in text, command
