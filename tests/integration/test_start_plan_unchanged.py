"""`onerun start --dry-run` and `onerun render` give the same result as the recorded ones.

The recorded plans and rendered configs (tests/integration/data/plans/) were taken before
the package layout changed (issue "Make the architecture visible"): a refactor that moves
code must not move a plan step, a setting's effect or a byte of a rendered config. The
scenarios cover the 7.0.0 and 7.4.0 layouts: a first install, a start that upgrades a real
7.0.0 database, a refusal, and settings that change the configs and the services.

A deliberate change of behaviour re-records them: ``ONERUN_RECORD_PLANS=1 pytest <this>``,
and the diff of the data files is reviewed with the change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testlib import DB_FIXTURES, lay_out_etc_dist, require_shared, write_image_versions

from onerun.layout import Layout
from onerun.log import Logger
from onerun.settings import load_settings
from onerun.start import prepare

RECORDED = Path(__file__).parent / "data" / "plans"
RECORD = os.environ.get("ONERUN_RECORD_PLANS") == "1"
PASSWORD = "fixturepass"  # one_auth of the fixture databases
CONFIG = {
    "oned": {"DEFAULT_UMASK": "007", "VNC_PORTS": {"START": "5950"}},
    "monitord": {"PROBES_PERIOD": {"HOST": "300"}},
    "oneflow": {":default_cooldown": 120},
    "onegate": {":port": 5031},
    "fireedge": {"port": 2617},
}


def put_volume(root: Path, *, with_dot_one: bool, last_release: str = "7.0.0") -> None:
    """A volume a 7.0.0 front-end left: its database, optionally its ~/.one and record."""
    source = require_shared(DB_FIXTURES / "sqlite-bootstrapped")
    volume = root / "var/lib/one"
    volume.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "one.db", volume / "one.db")
    if with_dot_one:
        shutil.copytree(source / "dot-one", volume / ".one")
        state = volume / ".onerun"
        state.mkdir()
        (state / "last-start.json").write_text(json.dumps(
            {"opennebula_version": last_release, "db_version": "7.0.0", "recorded_at": 0}))


def put_config(root: Path, config: dict[str, Any]) -> None:
    """The ONERUN_CONFIG file (JSON is YAML) a ConfigMap would mount."""
    (root / "config").mkdir()
    (root / "config/onerun.json").write_text(json.dumps(config))


SCENARIOS: dict[str, tuple[str, dict[str, str], Callable[[Path], None] | None]] = {
    # name: (release of the image, environment, volume before the start)
    "first-install-7.0.0": ("7.0.0", {"ONEADMIN_PASSWORD": PASSWORD}, None),
    "first-install-7.4.0": ("7.4.0", {"ONEADMIN_PASSWORD": PASSWORD}, None),
    "restart-7.0.0": ("7.0.0", {"ONEADMIN_PASSWORD": PASSWORD},
                      lambda root: put_volume(root, with_dot_one=True)),
    "upgrade-7.0.0-to-7.4.0": ("7.4.0", {"ONEADMIN_PASSWORD": PASSWORD},
                               lambda root: put_volume(root, with_dot_one=True)),
    "lost-volume-refused-7.4.0": ("7.4.0", {"ONEADMIN_PASSWORD": PASSWORD},
                                  lambda root: put_volume(root, with_dot_one=False)),
    "configured-7.4.0": ("7.4.0", {
        "ONEADMIN_PASSWORD": PASSWORD, "ONERUN_CONFIG": "<root>/config/onerun.json",
        "ONERUN_SERVICES": "oned,oneflow,onegate", "ONERUN_BACKUP_KEEP": "5",
        "ONERUN_LISTEN_ADDRESS": "127.0.0.1", "ONE_KEY": "k" * 32},
        lambda root: put_config(root, CONFIG)),
    "maintenance-7.0.0": ("7.0.0", {"ONEADMIN_PASSWORD": PASSWORD, "ONERUN_MAINTENANCE": "1"},
                          lambda root: put_volume(root, with_dot_one=True)),
}


def normalise(text: str, root: Path) -> str:
    """Without what differs between runs and machines: this interpreter's path, the root."""
    return text.replace(sys.executable, "<python>").replace(str(root), "<root>")


def without_host(plan: dict[str, Any]) -> dict[str, Any]:
    """The hostname check's detail names this machine: only its result is compared."""
    for step in plan["steps"]:
        if step.get("name") == "hostname":
            step["detail"] = step["detail"].replace(socket.gethostname(), "<hostname>")
    return plan


def run_onerun(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ONERUN_LOG_FORMAT": "json",
                **env}
    return subprocess.run([sys.executable, "-m", "onerun", *args, "--root", str(root)],
                          env=full_env, capture_output=True, text=True, timeout=120,
                          check=False)


def written_contents(root: Path, env: dict[str, str]) -> dict[str, str]:
    """Each file the plan writes, by the hash of its normalised content: the dry run shows
    only sizes, and supervisord.conf names the interpreter. The same plan, built in this
    process."""
    settings = load_settings(env, root=str(root))
    plan = prepare(settings, Layout(root), Logger("json"), dry_run=True)
    contents = {}
    for action in plan.actions:
        content = getattr(action, "content", None)  # WriteFile's bytes, supervisord.conf's str
        if content is None or getattr(action, "sensitive", False):
            continue
        text = content.decode() if isinstance(content, bytes) else content
        contents[normalise(str(action.path), root)] = "sha256:" + hashlib.sha256(
            normalise(text, root).encode()).hexdigest()
    return contents


def outcome(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """The dry-run plan, with what each file it writes holds, then every config
    ``onerun render`` writes (by content hash)."""
    dry = run_onerun(root, env, "start", "--dry-run")
    plan = without_host(json.loads(normalise(dry.stdout, root)))
    if plan["steps"] and not plan["refused"]:
        contents = written_contents(root, env)
        for step in plan["steps"]:
            if step["action"] == "write" and step["content"] != "secret":
                step["content"] = contents[step["path"]]
    rendered: dict[str, str] = {}
    if not plan["refused"]:
        result = run_onerun(root, env, "render")
        assert result.returncode == 0, result.stderr
        etc = root / "etc/one"
        rendered = {str(path.relative_to(etc)): hashlib.sha256(
            normalise(path.read_text(), root).encode()).hexdigest()
            for path in sorted(etc.rglob("*")) if path.is_file()}
    return {"exit_code": dry.returncode, "plan": plan, "rendered": rendered}


@pytest.fixture
def fixed_length_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root whose path has the same length in every run: some files hold the root's path,
    and the plan shows their sizes (pytest's own tmp_path grows with --basetemp)."""
    root = Path(tempfile.mkdtemp(prefix="onerun-plan-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_plan_and_the_rendered_configs_are_the_recorded_ones(
        name: str, fixed_length_root: Path) -> None:
    release, scenario_env, volume = SCENARIOS[name]
    root = fixed_length_root
    lay_out_etc_dist(root, release)
    write_image_versions(root, release, release)
    env = {key: value.replace("<root>", str(root)) for key, value in scenario_env.items()}
    if volume is not None:
        volume(root)
    result = outcome(root, env)
    recorded = RECORDED / f"{name}.json"
    if RECORD:
        recorded.parent.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    assert result == json.loads(recorded.read_text())
