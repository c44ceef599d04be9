"""The chart and onerun agree: what the chart renders is what onerun accepts.

Offline: each render is turned into the container's environment the way the kubelet would
build it (values, fieldRefs, $(VAR) expansion) and its Secret and ConfigMap files are written
to a temporary directory standing in for the mounts (paths rewritten there). That environment
goes through onerun's own settings loader, the probe commands through onerun's own probe
argument parser, and every path onerun writes is checked against the writable mounts.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from chartlib import (
    FrontendRuntime,
    MountedFile,
    Rendered,
    frontend_runtime,
    render,
    render_error,
)

from onerun.errors import SettingsError
from onerun.layout import Layout
from onerun.runtime import probe
from onerun.settings import Settings, load_settings

DATABASES: dict[str, dict[str, Any]] = {
    "sqlite": {"database": {"type": "sqlite"}},
    "mariadb": {},  # the default: bundled MariaDB
    "external": {
        "database": {
            "type": "external",
            "external": {"host": "db.example.org", "password": "an-external-db-password"},
        }
    },
}
CONFIG = {"oned": {"DEFAULT_UMASK": 117, "VNC_PORTS": {"START": 6000}},
          "monitord": {"NETWORK": {"PORT": 4124}}}


def load_runtime(runtime: FrontendRuntime, mounts: Path) -> Settings:
    """Project the mounts under ``mounts`` and load onerun's settings from the pod's env."""
    for path, item in runtime.files.items():
        target = mounts / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.content)
        target.chmod(item.mode)
    projected_dirs = {str(PurePosixPath(p).parent) for p in runtime.files}
    env = {}
    for name, value in runtime.env.items():
        mounted = value in runtime.files or value in projected_dirs
        env[name] = str(mounts / value.lstrip("/")) if mounted else value
    return load_settings(env)


def settings_for(rendered: Rendered, mounts: Path) -> tuple[Settings, FrontendRuntime]:
    runtime = frontend_runtime(rendered)
    return load_runtime(runtime, mounts), runtime


@pytest.mark.parametrize("database", sorted(DATABASES))
def test_onerun_accepts_what_the_chart_renders(database: str, tmp_path: Path) -> None:
    rendered = render({**DATABASES[database], "opennebula": {"config": CONFIG}})
    settings, runtime = settings_for(rendered, tmp_path)

    secret = runtime.files["/etc/onerun/secrets/oneadmin-password"].content.decode()
    assert settings.oneadmin_password is not None
    assert settings.oneadmin_password.reveal() == secret
    assert settings.one_key is not None and len(settings.one_key.reveal()) >= 32
    assert settings.overrides["oned"]["DEFAULT_UMASK"] == 117
    assert settings.hostname == runtime.env["OPENNEBULA_HOSTNAME"]
    assert settings.hostname is not None and "$(" not in settings.hostname
    if database == "sqlite":
        assert settings.db_backend == "sqlite" and settings.db_password is None
    else:
        assert settings.db_backend == "mysql"
        assert settings.db_password is not None
        db_file = runtime.files["/etc/onerun/db/password"]
        assert settings.db_password.reveal() == db_file.content.decode()
    if database == "external":
        assert (settings.db_host, settings.db_port) == ("db.example.org", 3306)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, (False, None, 20.0)),  # unset: onerun's own defaults
        ({"trustOneKey": True, "backupKeepManual": 1000, "upgradeStopGraceSeconds": 54.5},
         (True, 1000, 54.5)),
        ({"trustOneKey": False, "backupKeepManual": 1, "upgradeStopGraceSeconds": 0},
         (False, 1, 0.0)),
    ],
)
def test_onerun_accepts_the_optional_settings_the_chart_renders(
    values: dict[str, Any], expected: tuple[bool, int | None, float], tmp_path: Path
) -> None:
    rendered = render({"database": {"type": "sqlite"}, "opennebula": values})
    settings, _ = settings_for(rendered, tmp_path)
    assert (settings.trust_one_key, settings.backup_keep_manual,
            settings.upgrade_stop_grace) == expected


def test_onerun_accepts_the_node_ip_as_monitor_address(tmp_path: Path) -> None:
    rendered = render({"database": {"type": "sqlite"}, "monitord": {"hostPort": True}})
    settings, runtime = settings_for(rendered, tmp_path)
    assert settings.monitor_address == runtime.env["OPENNEBULA_MONITOR_ADDRESS"] != ""


REFUSED = [
    ({"oned": {"DB": {"BACKEND": "sqlite"}}}, "opennebula.config.oned.DB"),
    ({"oned": {"db": {"BACKEND": "mysql"}}}, "opennebula.config.oned.db"),
    ({"oned": {"Hostname": "one.example.org"}}, "opennebula.config.oned.Hostname"),
    ({"monitord": {"NETWORK": {"MONITOR_ADDRESS": "192.0.2.1"}}},
     "opennebula.config.monitord.NETWORK.MONITOR_ADDRESS"),
    ({"monitord": {"network": [{"monitor_address": "192.0.2.1"}]}},
     "opennebula.config.monitord.network.monitor_address"),
]


@pytest.mark.parametrize(("config", "path"), REFUSED)
def test_config_onerun_always_refuses_fails_the_render(
    config: dict[str, Any], path: str, tmp_path: Path
) -> None:
    message = render_error({"opennebula": {"config": config}})
    assert path in message and "Remove it" in message
    # onerun itself refuses it with the environment the chart renders: the render check
    # only moves onerun's refusal from a crash-looping pod to `helm install`.
    runtime = frontend_runtime(render({"database": {"type": "sqlite"}}))
    config_file = "/etc/onerun/config/onerun.yaml"
    assert runtime.env["ONERUN_CONFIG"] == config_file
    runtime.files[config_file] = MountedFile(json.dumps(config).encode(), 0o644, False)
    with pytest.raises(SettingsError):
        load_runtime(runtime, tmp_path)


def test_auto_lets_hostname_and_monitor_address_through(tmp_path: Path) -> None:
    """With hostname "auto" onerun leaves both to the packaged files, so both may be set."""
    config = {"oned": {"HOSTNAME": "one.example.org"},
              "monitord": {"NETWORK": {"MONITOR_ADDRESS": "192.0.2.1"}}}
    rendered = render({"database": {"type": "sqlite"},
                       "opennebula": {"hostname": "auto", "config": config}})
    settings, _ = settings_for(rendered, tmp_path)
    assert settings.overrides["oned"]["HOSTNAME"] == "one.example.org"
    assert settings.hostname is None and settings.monitor_address is None


def probe_commands(rendered: Rendered) -> list[tuple[list[str], float]]:
    """Every `onerun probe` exec in the render, with the kubelet's timeout for it."""
    found = []
    pods = [d["spec"]["template"]["spec"] for d in rendered.all("StatefulSet")]
    pods += [d["spec"] for d in rendered.all("Pod")]
    for spec in pods:
        for c in spec["containers"]:
            if c.get("command", [])[:2] == ["onerun", "probe"]:
                found.append((c["command"], float("inf")))  # the helm test pod runs it directly
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = c.get(kind, {}).get("exec", {}).get("command")
                if command and command[0] == "onerun":
                    found.append((command, float(c[kind]["timeoutSeconds"])))
    return found


@pytest.mark.parametrize("database", sorted(DATABASES))
def test_every_probe_command_parses_with_onerun_probe(database: str) -> None:
    commands = probe_commands(render(DATABASES[database]))
    assert len(commands) == 4  # startup, readiness, liveness, helm test
    for command, kubelet_timeout in commands:
        assert command[:2] == ["onerun", "probe"]
        options = probe.parse_args(command[2:])
        assert options.kind in probe.KINDS
        assert options.timeout < kubelet_timeout


def test_the_probe_parser_rejects_what_a_typo_would_render() -> None:
    with pytest.raises(probe.UsageError):
        probe.parse_args(["readyness", "--timeout", "0.8"])


def writable_mount(runtime: FrontendRuntime, path: str) -> dict[str, Any] | None:
    """The mount that holds ``path`` (longest mountPath prefix), if any."""
    best: dict[str, Any] | None = None
    for mount in runtime.mounts:
        base = mount["mountPath"].rstrip("/")
        holds = path == base or path.startswith(base + "/")
        if holds and (best is None or len(base) > len(best["mountPath"].rstrip("/"))):
            best = mount
    return best


# Ubuntu 24.04 (the image's base): /var/lock -> /run/lock; the read-only root cannot follow
# anything else.
IMAGE_SYMLINKS = {"/var/lock": "/run/lock"}


def resolve_in_image(path: str) -> str:
    for link, target in IMAGE_SYMLINKS.items():
        if path == link or path.startswith(link + "/"):
            return target + path[len(link):]
    return path


@pytest.mark.parametrize("database", sorted(DATABASES))
def test_every_path_onerun_writes_is_on_a_writable_mount(database: str) -> None:
    runtime = frontend_runtime(render(DATABASES[database]))
    layout = Layout()
    written = [layout.etc_one, layout.log_dir, layout.run_one, layout.run_onerun,
               layout.lock_dir, layout.lock_file, layout.var_lib_one, layout.state_dir,
               layout.supervisor_sock, layout.ssh_socks, Path("/tmp")]
    for path in written:
        in_image = resolve_in_image(str(path))
        mount = writable_mount(runtime, in_image)
        assert mount is not None, f"{path} ({in_image}) is on the read-only root filesystem"
        assert not mount.get("readOnly", False), f"{path} is on read-only mount {mount['name']}"
        volume = runtime.volumes.get(mount["name"])
        assert mount["name"] == "data" or (volume is not None and "emptyDir" in volume)
    assert writable_mount(runtime, str(layout.var_lib_one))["name"] == "data"  # type: ignore[index]


def test_writable_check_fails_when_the_lock_mount_is_missing() -> None:
    """The check above can fail: with /run/lock gone, /var/lock/one would still be under the
    /run emptyDir; with /run gone too, it lands on the read-only root."""
    runtime = frontend_runtime(render())
    stripped = [m for m in runtime.mounts if m["mountPath"] not in ("/run", "/run/lock")]
    broken = FrontendRuntime(runtime.env, runtime.files, runtime.empty_dirs,
                             runtime.data_path, stripped, runtime.volumes)
    assert writable_mount(broken, resolve_in_image(str(Layout().lock_dir))) is None
