"""The image run the way the chart runs it (needs a Docker engine; skips here with a reason).

Everything is derived from the rendered chart (tests/chart/chartlib.py), so the test follows
the chart: uid and gid 9869 with the pod's fsGroup as a supplementary group, a read-only root
filesystem with tmpfs mounts at exactly the chart's emptyDir paths, the Secret and ConfigMap
files projected read-only with the chart's modes (0440, root:9869 for secrets) and passed as
*_FILE / ONERUN_CONFIG, no capabilities and no privilege escalation. The pod's stable DNS name
is the container's hostname, as the kubelet writes it into /etc/hosts.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
from testcontainers.core.container import DockerContainer

from ci import boot_test

pytestmark = pytest.mark.docker

Start = Callable[[Any], Any]


def _load_chartlib() -> ModuleType:
    """tests/chart/chartlib.py by path (tests/ directories are not packages)."""
    if "chartlib" in sys.modules:  # already imported by tests/chart in this run
        return sys.modules["chartlib"]
    path = Path(__file__).resolve().parents[1] / "chart" / "chartlib.py"
    spec = importlib.util.spec_from_file_location("chartlib", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chartlib"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def docker_size(quantity: str) -> str:
    """A Kubernetes sizeLimit (64Mi, 1Gi) as a tmpfs size option (64m, 1g)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"unexpected sizeLimit {quantity!r}"
    return f"{match[1]}{match[2][0].lower()}"


def seeded_volume(docker_client: Any, image: str, files: dict[str, Any], gid: int) -> str:
    """A named volume holding ``files`` ({name: MountedFile}) owned root:<gid> with their modes,
    as the kubelet projects a Secret or ConfigMap under an fsGroup."""
    name = f"onerun-boot-mount-{uuid.uuid4().hex[:10]}"
    docker_client.volumes.create(name)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for filename, item in files.items():
            info = tarfile.TarInfo(filename)
            info.size = len(item.content)
            tar.addfile(info, io.BytesIO(item.content))
    script = "; ".join(
        f"chown 0:{gid} /seed/{f} && chmod {item.mode:o} /seed/{f}" for f, item in files.items()
    )
    helper = docker_client.containers.create(
        image, entrypoint=["/bin/sh", "-ec", script], user="0",
        volumes={name: {"bind": "/seed", "mode": "rw"}},
    )
    try:
        assert helper.put_archive("/seed", archive.getvalue())
        helper.start()
        assert helper.wait(timeout=60)["StatusCode"] == 0, helper.logs().decode()
    finally:
        helper.remove(force=True)
    return name


@pytest.fixture
def chart_volumes(docker_client: Any) -> Iterator[list[str]]:
    """Names of the volumes a test seeds; removed afterwards (after its containers)."""
    names: list[str] = []
    yield names
    for name in names:
        docker_client.volumes.get(name).remove(force=True)


def test_image_runs_as_the_chart_runs_it(
    images: boot_test.Images, docker_client: Any, volume: str, chart_volumes: list[str],
    started: Start,
) -> None:
    chartlib = _load_chartlib()
    rendered = chartlib.render({"database": {"type": "sqlite"}})
    runtime = chartlib.frontend_runtime(rendered)
    pod = rendered.get("StatefulSet", chartlib.FULLNAME)["spec"]["template"]["spec"]
    security = pod["securityContext"]
    uid, gid, fs_group = security["runAsUser"], security["runAsGroup"], security["fsGroup"]

    by_dir: dict[str, dict[str, Any]] = {}
    for path, item in runtime.files.items():
        posix = PurePosixPath(path)
        by_dir.setdefault(str(posix.parent), {})[posix.name] = item
    assert runtime.env["ONEADMIN_PASSWORD_FILE"] in runtime.files
    assert runtime.env["ONERUN_CONFIG"] in runtime.files

    hostname, _, domain = runtime.env["OPENNEBULA_HOSTNAME"].partition(".")
    front = DockerContainer(images.current).with_envs(**runtime.env).with_kwargs(
        user=f"{uid}:{gid}",
        group_add=[str(fs_group)],
        read_only=True,
        tmpfs={path: f"rw,exec,mode=1777,size={docker_size(size)}" if size else "rw,exec,mode=1777"
               for path, size in runtime.empty_dirs.items()},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        hostname=hostname,
        domainname=domain,
    )
    front.with_volume_mapping(volume, runtime.data_path, "rw")
    for directory, files in by_dir.items():
        name = seeded_volume(docker_client, images.current, files, fs_group)
        chart_volumes.append(name)
        front.with_volume_mapping(name, directory, "ro")

    container = started(front).get_wrapped_container()
    boot_test.wait_ready(container)
    password = runtime.files[runtime.env["ONEADMIN_PASSWORD_FILE"]].content.decode()
    xml = str(boot_test.api_call(container, "oneadmin", password, "one.user.info", 0))
    assert "<NAME>oneadmin</NAME>" in xml
    container.reload()
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert set(container.attrs["HostConfig"]["Tmpfs"]) == set(runtime.empty_dirs)
