"""Building blocks of the container tier: a pod, the front-end and MariaDB as the chart runs
them, and the checks a user would make from outside (exec, logs, exit codes).

A *pod* is one network namespace that holds only loopback, kept open by a pause container,
as Kubernetes gives a pod. Every container of a test joins it: the front-end reaches MariaDB
at 127.0.0.1 and no test traffic leaves the machine. Everything else comes from the rendered
chart (tests/chart/chartlib.py): uid and gid 9869 with the pod's fsGroup, a read-only root
filesystem, an empty writable volume at each of the chart's emptyDirs, secrets as 0440
root:9869 files passed through ``*_FILE``, ``ONERUN_CONFIG`` from a file, no capabilities,
no privilege escalation.
"""

from __future__ import annotations

import base64
import io
import os
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from testcontainers.core.container import DockerContainer
from testlib import load_chartlib

from ci import boot_test

# The trees have no FireEdge (7.0.0) and no guacd; OneForm and OneKS 7.4 need gems Debian 12
# does not package (../shared/opennebula-build/README.md). The release image runs them all.
TREE_SERVICES = "oned,hem,oneflow,onegate,ssh-agent"
STOP_BUDGET = 60.0  # README "Processes, logs and stopping": the worst-case stop budget
Start = Callable[[DockerContainer], Any]


@dataclass
class Engine:
    """The Docker-compatible engine (podman's API here, Docker on GitHub) and what a test
    made on it, removed afterwards newest first whatever the outcome."""

    client: Any
    helper_image: str
    containers: list[Any] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def start(self, container: DockerContainer) -> Any:
        """Start a testcontainers container; the docker-py object is returned."""
        container.start()
        wrapped = container.get_wrapped_container()
        self.containers.append(wrapped)
        return wrapped

    def volume(self, owner: str = "0:9869", mode: str = "2775") -> str:
        """A named volume whose root is owned and moded as the kubelet leaves an fsGroup PVC."""
        name = f"onerun-tier-{uuid.uuid4().hex[:10]}"
        self.client.volumes.create(name)
        self.volumes.append(name)
        self.run_helper(f"chown {owner} /v && chmod {mode} /v", {name: "/v"})
        return name

    def seeded_volume(self, files: dict[str, Any], gid: int) -> str:
        """A volume with ``files`` ({name: chartlib.MountedFile}) owned root:<gid> with their
        modes, as the kubelet projects a Secret or ConfigMap under an fsGroup."""
        name = self.volume(owner="0:0", mode="0755")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for filename, item in files.items():
                info = tarfile.TarInfo(filename)
                info.size = len(item.content)
                tar.addfile(info, io.BytesIO(item.content))
        script = "; ".join(f"chown 0:{gid} /v/{f} && chmod {item.mode:o} /v/{f}"
                           for f, item in files.items())
        self.run_helper(script, {name: "/v"}, archive.getvalue())
        return name

    def run_helper(self, script: str, mounts: dict[str, str], archive: bytes | None = None,
                   image: str | None = None) -> str:
        """Run ``script`` as root in a throwaway container with ``mounts`` ({volume: path}),
        after unpacking ``archive`` into the first mount. podman's archive upload fails now
        and then ("broken pipe"): a fresh helper tries again."""
        for attempt in range(3):
            helper = self.client.containers.create(
                image or self.helper_image, [script], entrypoint=["/bin/sh", "-ec"], user="0",
                network_mode="none",
                volumes={v: {"bind": p, "mode": "rw"} for v, p in mounts.items()},
            )
            try:
                if archive is not None:
                    try:
                        helper.put_archive(next(iter(mounts.values())), archive)
                    except Exception:
                        if attempt == 2:
                            raise
                        continue
                helper.start()
                status = helper.wait(timeout=120)["StatusCode"]
                logs = helper.logs().decode("utf-8", "replace")
                assert status == 0, f"helper failed ({status}): {script}\n{logs}"
                return str(logs)
            finally:
                helper.remove(force=True)
        raise AssertionError("unreachable")

    def cleanup(self) -> None:
        for container in reversed(self.containers):
            try:
                container.remove(force=True, v=True)
            except Exception as exc:  # already gone is fine; report anything else
                if "no such container" not in str(exc).lower():
                    raise
        for name in reversed(self.volumes):
            self.client.volumes.get(name).remove(force=True)


@dataclass
class Pod:
    """One loopback-only network namespace shared by a test's containers."""

    engine: Engine
    pause: Any

    @classmethod
    def create(cls, engine: Engine) -> Pod:
        pause = DockerContainer(engine.helper_image).with_command(["sleep", "infinity"])
        pause.with_kwargs(network_mode="none", hostname="pod")
        return cls(engine, engine.start(pause))

    @property
    def network_mode(self) -> str:
        return f"container:{self.pause.id}"


@dataclass(frozen=True)
class Frontend:
    """How the chart starts the front-end: environment, mounted files, emptyDirs."""

    env: dict[str, str]
    files: dict[str, Any]
    empty_dirs: dict[str, str]
    data_path: str
    uid: int
    gid: int
    fs_group: int
    hostname: str

    @property
    def password(self) -> str:
        return str(self.files[self.env["ONEADMIN_PASSWORD_FILE"]].content.decode())

    def secret(self, env_name: str) -> str:
        return str(self.files[self.env[env_name]].content.decode())


@dataclass(frozen=True)
class Database:
    """The chart's bundled MariaDB: its environment and its secret files."""

    env: dict[str, str]
    files: dict[str, Any]

    @property
    def password(self) -> str:
        return str(self.files["/etc/mariadb-secret/password"].content.decode())


def chart_frontend(values: dict[str, Any], **env: str) -> Frontend:
    """The front-end of one chart render; ``env`` overrides or adds variables."""
    return chart_install(values, **env)[0]


def chart_install(values: dict[str, Any], **env: str) -> tuple[Frontend, Database | None]:
    """One chart render: the front-end and, when bundled, the MariaDB it talks to (their
    generated passwords belong together, so both come from the same render)."""
    chartlib = load_chartlib()
    rendered = chartlib.render(values)
    runtime = chartlib.frontend_runtime(rendered)
    pod = rendered.get("StatefulSet", chartlib.FULLNAME)["spec"]["template"]["spec"]
    security = pod["securityContext"]
    # Images built from the trees run what the trees can run; a release image (BOOT_IMAGE)
    # runs every service, as the chart leaves it.
    trees = {} if os.environ.get("BOOT_IMAGE") else {"ONERUN_SERVICES": TREE_SERVICES}
    merged = {**runtime.env, **trees, **env}
    hostname = runtime.env["OPENNEBULA_HOSTNAME"].partition(".")[0]  # the pod's name
    front = Frontend(merged, dict(runtime.files), dict(runtime.empty_dirs), runtime.data_path,
                     security["runAsUser"], security["runAsGroup"], security["fsGroup"],
                     hostname)
    db = next((s for s in rendered.all("StatefulSet")
               if s["metadata"]["name"].endswith("mariadb")), None)
    if db is None:
        return front, None
    spec = db["spec"]["template"]["spec"]
    container = spec["containers"][0]
    db_env = {e["name"]: str(e["value"]) for e in container["env"] if "value" in e}
    volume = next(v for v in spec["volumes"] if v["name"] == "secret")["secret"]
    data = rendered.get("Secret", volume["secretName"])["data"]
    files = {f"/etc/mariadb-secret/{item['path']}": chartlib.MountedFile(
                 base64.b64decode(data[item["key"]]), volume["defaultMode"], True)
             for item in volume["items"]}
    return front, Database(db_env, files)


def empty_dirs(engine: Engine, front: Frontend) -> dict[str, str]:
    """A fresh volume for each of the chart's emptyDirs ({mount path: volume}). A new pod
    gets new ones; a container restarted in its pod (after a crash) keeps them."""
    return {path: engine.volume(mode="2777") for path in front.empty_dirs}


def frontend_container(engine: Engine, image: str, pod: Pod, front: Frontend,
                       data_volume: str, *, scratch: dict[str, str] | None = None,
                       entrypoint: list[str] | None = None) -> DockerContainer:
    """The front-end container of ``front`` in ``pod`` on ``data_volume``; ``scratch`` are
    the emptyDir volumes of a container that restarts in the same pod; ``entrypoint`` runs
    another onerun command in the same setting (``onerun backup``)."""
    by_dir: dict[str, dict[str, Any]] = {}
    for path, item in front.files.items():
        posix = PurePosixPath(path)
        by_dir.setdefault(str(posix.parent), {})[posix.name] = item
    container = DockerContainer(image).with_envs(**front.env).with_kwargs(
        user=f"{front.uid}:{front.gid}",
        group_add=[str(front.fs_group)],
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        hostname=front.hostname,
        network_mode=pod.network_mode,
        **({"entrypoint": entrypoint} if entrypoint else {}),
    )
    # emptyDirs are empty, writable volumes (podman's tmpfs would copy the image's directory
    # in and keep its owner and mode); "nocopy": a PVC never holds the image's files either.
    for path, volume in (scratch or empty_dirs(engine, front)).items():
        container.with_volume_mapping(volume, path, "rw,nocopy")
    container.with_volume_mapping(data_volume, front.data_path, "rw,nocopy")
    for directory, files in by_dir.items():
        container.with_volume_mapping(engine.seeded_volume(files, front.fs_group), directory, "ro")
    return container


def mariadb_container(engine: Engine, image: str, pod: Pod, db: Database,
                      data_volume: str) -> DockerContainer:
    container = DockerContainer(image).with_envs(**db.env)
    container.with_kwargs(network_mode=pod.network_mode)
    container.with_volume_mapping(data_volume, "/var/lib/mysql", "rw,nocopy")
    files = {PurePosixPath(p).name: f for p, f in db.files.items()}
    container.with_volume_mapping(engine.seeded_volume(files, 999), "/etc/mariadb-secret", "ro")
    return container


def start_mariadb(engine: Engine, image: str, pod: Pod, db: Database) -> Any:
    """The chart's bundled MariaDB in ``pod`` on a fresh volume, accepting connections."""
    box = engine.start(mariadb_container(engine, image, pod, db,
                                         engine.volume(owner="0:0", mode="0755")))
    wait_until(box, ["mariadb-admin", "--no-defaults", "ping"], 120, "MariaDB")
    return box


def start_ready(engine: Engine, image: str, pod: Pod, front: Frontend, volume: str, *,
                timeout: float) -> Any:
    """The front-end on ``volume``, once ``onerun probe readiness`` passes."""
    box = engine.start(frontend_container(engine, image, pod, front, volume))
    wait_ready(box, timeout)
    return box


# --- what a user sees ------------------------------------------------------------------------

def logs(container: Any) -> str:
    return str(container.logs().decode("utf-8", "replace"))


def wait_until(container: Any, argv: list[str], timeout: float, what: str) -> float:
    """boot_test.wait_until, failing at once with the log when the container has ended."""
    try:
        return boot_test.wait_until(container, argv, timeout, what, interval=1.0)
    except Exception as exc:
        container.reload()
        if container.status in ("running", "paused"):
            raise
        code = container.attrs["State"]["ExitCode"]
        raise AssertionError(f"{what}: the container ended (exit {code}) before it:\n"
                             f"{logs(container)[-4000:]}") from exc


def wait_ready(container: Any, timeout: float) -> float:
    return wait_until(container, ["onerun", "probe", "readiness"], timeout, "readiness")


def exec_ok(container: Any, argv: list[str], **kwargs: Any) -> str:
    """Run ``argv`` inside; its output, or an assertion error with output and log tail."""
    result = container.exec_run(argv, **kwargs)
    output = (result.output or b"").decode("utf-8", "replace")
    assert result.exit_code == 0, (f"{' '.join(argv)} exited {result.exit_code}:\n{output}\n"
                                   f"--- log tail ---\n{logs(container)[-3000:]}")
    return output


def read_file(container: Any, path: str) -> bytes:
    """A file's bytes, read inside the container (as its user)."""
    result = container.exec_run(["cat", path])
    assert result.exit_code == 0, f"cat {path}: {result.output!r}"
    return bytes(result.output)


def wait_exit(container: Any, timeout: float) -> tuple[int, float]:
    """Wait for the container to end: (exit code, seconds waited)."""
    start = time.monotonic()
    try:
        status = container.wait(timeout=timeout)["StatusCode"]
    except Exception as exc:  # the client's read timeout: still running
        raise AssertionError(f"still running after {timeout:.0f}s:\n{logs(container)[-3000:]}"
                             ) from exc
    return int(status), time.monotonic() - start


def run_seconds(container: Any) -> float:
    """How long the ended container ran, by the engine's own clock."""
    container.reload()
    state = container.attrs["State"]
    started, finished = (parse_stamp(state[k]) for k in ("StartedAt", "FinishedAt"))
    return (finished - started).total_seconds()


def parse_stamp(stamp: str) -> datetime:
    """An engine's RFC 3339 time with nanoseconds (Go's format)."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp.replace("Z", "+00:00")))


def wait_for_log(container: Any, needle: str, timeout: float) -> float:
    """Seconds until ``needle`` appears in the container's output (streamed, not polled)."""
    start = time.monotonic()
    seen = ""
    for chunk in container.logs(stream=True, follow=True):
        seen += chunk.decode("utf-8", "replace")
        if needle in seen:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
    raise AssertionError(f"{needle!r} not in the output within {timeout:.0f}s:\n{seen[-3000:]}")


def prefixed_services(text: str) -> set[str]:
    """The ``[service]`` prefixes on the container's stdout."""
    return set(re.findall(r"^\[([a-z0-9-]+)\] ", text, flags=re.MULTILINE))


def stop_order(text: str) -> list[str]:
    """Programs in the order supervisord reported them stopped."""
    return re.findall(r"(?:INFO|WARN) stopped: (\S+) ", text)


def api(container: Any, password: str, method: str, *args: Any) -> Any:
    return boot_test.api_call(container, "oneadmin", password, method, *args)


def user_names(container: Any, password: str) -> set[str]:
    xml = str(api(container, password, "one.userpool.info"))
    return set(re.findall(r"<NAME>([^<]*)</NAME>", xml))


def all_present(expected: Iterable[str], present: set[str]) -> list[str]:
    return sorted(set(expected) - present)
