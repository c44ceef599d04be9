"""The front-end image with a real OpenNebula, run as the chart runs it (tier.py): first
installs on sqlite and MariaDB, a restart, a late and a missing database, and SIGTERM in each
phase with onerun as the container's PID 1."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import tier
from conftest import TierImages
from testcontainers.core.container import DockerContainer

TEMP_FILE = re.compile(r"/\.[^/]+\.[a-z0-9_]{8}$")
READY = 300.0  # generous for a loaded 2-core machine; measured values are in bench/
CRITICAL_FAILURE = 70  # README "Exit codes": a critical program failed after the hand-off


def start_frontend(engine: tier.Engine, image: str, pod: tier.Pod, front: tier.Frontend,
                   volume: str) -> Any:
    return engine.start(tier.frontend_container(engine, image, pod, front, volume))


def mariadb_install(**env: str) -> tuple[tier.Frontend, tier.Database]:
    """The default install (bundled MariaDB); the pod's loopback stands in for its Service."""
    front, db = tier.chart_install({}, DB_HOST="127.0.0.1", **env)
    assert db is not None
    return front, db


def service_files(container: Any) -> dict[str, bytes]:
    names = ("one_key", "one_auth", "sunstone_auth", "oneflow_auth", "onegate_auth")
    return {n: tier.read_file(container, f"/var/lib/one/.one/{n}") for n in names}


def test_sqlite_first_install_then_restart_on_the_same_volume(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    volume = engine.volume()
    first = start_frontend(engine, images.current, pod, front, volume)

    tier.wait_until(first, ["onerun", "probe", "startup"], READY, "startup probe")
    tier.wait_ready(first, READY)
    # The release is read as the image's OpenNebula ships it (7.2+: opennebula/version.rb).
    plan = first.exec_run(["onerun", "start", "--dry-run"]).output.decode()
    assert f"the image runs OpenNebula {images.current_version}" in plan, plan
    shown = tier.exec_ok(first, ["oneuser", "show", "0"])
    assert "oneadmin" in shown
    tier.exec_ok(first, ["oneflow", "list"])
    gate = tier.exec_ok(first, ["python3", "-c",
        "import urllib.request, urllib.error\n"
        "try:\n urllib.request.urlopen('http://127.0.0.1:5030/', timeout=10)\n"
        "except urllib.error.HTTPError as e:\n print(e.code)"])
    assert gate.strip() == "401", f"OneGate without a token answered {gate!r}"
    processes = tier.exec_ok(first, ["ps", "-eo", "args"])
    assert "onehem-server" in processes and "one_sched" in processes, processes

    # Every service's own log reaches the container's stdout with its prefix (HEM logs
    # once it has loaded the hooks; OneGate and OneFlow on their first requests, above).
    deadline = time.monotonic() + 60
    wanted = {"oned", "monitord", "oneflow", "onegate", "hem"}
    while not wanted <= tier.prefixed_services(tier.logs(first)) and time.monotonic() < deadline:
        time.sleep(2)
    assert wanted <= tier.prefixed_services(tier.logs(first))

    before = service_files(first)
    first.kill(signal="SIGTERM")  # as kubectl delete: supervisord is PID 1 by now
    code, seconds = tier.wait_exit(first, tier.STOP_BUDGET + 30)
    text = tier.logs(first)
    assert code == 0, text[-3000:]
    assert seconds <= tier.STOP_BUDGET
    order = tier.stop_order(text)
    assert {"oned", "hem", "oneflow", "onegate"} <= set(order), "\n".join(
        line for line in text.splitlines() if not line.startswith("["))[-3000:]
    assert order.index("oned") > max(order.index(s) for s in ("hem", "oneflow", "onegate"))

    again = start_frontend(engine, images.current, pod, front, volume)
    tier.wait_ready(again, READY)
    assert "<NAME>oneadmin</NAME>" in str(tier.api(again, front.password, "one.user.info", 0))
    assert service_files(again) == before


def test_mariadb_first_install_keeps_the_password_out_of_logs_and_environments(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    front, database = mariadb_install()
    db_password = database.password
    db = tier.start_mariadb(engine, images.mariadb, pod, database)
    box = start_frontend(engine, images.current, pod, front, engine.volume())
    tier.wait_ready(box, READY)
    assert "<NAME>oneadmin</NAME>" in str(tier.api(box, front.password, "one.user.info", 0))
    assert front.env["DB_BACKEND"] == "mysql"

    for container in (box, db):
        container.reload()
        assert db_password not in tier.logs(container)
        assert db_password not in json.dumps(container.attrs["Config"]["Env"])
        assert db_password not in json.dumps(container.attrs["Config"].get("Cmd") or [])
    processes = tier.exec_ok(box, ["ps", "-eo", "args"])
    assert db_password not in processes


def test_mariadb_started_late_is_waited_for(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    front, database = mariadb_install()
    box = start_frontend(engine, images.current, pod, front, engine.volume())
    time.sleep(20)
    box.reload()
    assert box.status == "running", tier.logs(box)[-3000:]
    tier.start_mariadb(engine, images.mariadb, pod, database)
    tier.wait_ready(box, READY)
    box.reload()
    assert box.status == "running" and box.attrs["RestartCount"] == 0


def test_mariadb_never_started_exits_4_within_the_wait_timeout(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    timeout = 20
    front, _ = mariadb_install(ONERUN_DB_WAIT_TIMEOUT=str(timeout))
    box = start_frontend(engine, images.current, pod, front, engine.volume())
    code, _ = tier.wait_exit(box, timeout + 60)
    assert code == 4, tier.logs(box)[-3000:]
    elapsed = tier.run_seconds(box)
    assert elapsed <= timeout + 5, f"exit 4 after {elapsed:.1f}s"


def test_sigterm_while_waiting_for_the_database_exits_143_at_once(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    box = start_frontend(engine, images.current, pod, mariadb_install()[0], engine.volume())
    tier.wait_for_log(box, "waiting", 60)
    sent = time.monotonic()
    box.kill(signal="SIGTERM")
    code, _ = tier.wait_exit(box, 30)
    assert code == 143, tier.logs(box)[-3000:]
    assert time.monotonic() - sent <= 2.0


def test_sigterm_before_the_hand_off_exits_cleanly_and_the_next_start_converges(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    volume = engine.volume()
    box = start_frontend(engine, images.current, pod, front, volume)
    # Freeze onerun at its first line (the cgroup freezer holds it in place), queue SIGTERM,
    # thaw: the signal lands inside the start, before supervisord.
    tier.wait_for_log(box, "onerun info:", 60)
    box.pause()
    assert "handing over" not in tier.logs(box), "onerun was past the hand-off: cannot test"
    box.kill(signal="SIGTERM")
    box.unpause()
    code, seconds = tier.wait_exit(box, 10)
    text = tier.logs(box)
    assert code == 143, text[-3000:]
    assert seconds <= 2.0
    assert "SIGTERM" in text.splitlines()[-1]
    hidden = engine.run_helper("find /v -type f -name '.*'", {volume: "/v"}).split()
    half_written = [p for p in hidden if TEMP_FILE.search(p)]  # fsutil.atomic_write's temps
    assert not half_written, f"half-written files: {half_written}"

    again = start_frontend(engine, images.current, pod, front, volume)
    tier.wait_ready(again, READY)
    assert "<NAME>oneadmin</NAME>" in str(tier.api(again, front.password, "one.user.info", 0))


def test_sigterm_right_after_the_hand_off_stops_cleanly(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    box = start_frontend(engine, images.current, pod, front, engine.volume())
    tier.wait_for_log(box, "supervisord started with pid 1", 120)
    box.kill(signal="SIGTERM")
    code, seconds = tier.wait_exit(box, tier.STOP_BUDGET + 30)
    assert code == 0, tier.logs(box)[-3000:]
    assert seconds <= tier.STOP_BUDGET


def test_an_unresolvable_hostname_is_refused_with_the_fix(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, tmp_path: Path
) -> None:
    # Plain `docker run --hostname X` without a matching /etc/hosts entry, and no
    # OPENNEBULA_HOSTNAME: oned would look X up at start and exit 255.
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    hosts.chmod(0o644)
    front = tier.chart_frontend({"database": {"type": "sqlite"}}, OPENNEBULA_HOSTNAME="")
    container = tier.frontend_container(engine, images.current, pod, front, engine.volume())
    container.with_volume_mapping(str(hosts), "/etc/hosts", "ro")
    box = engine.start(container)
    code, _ = tier.wait_exit(box, 120)
    text = tier.logs(box)
    assert code == 3, text[-3000:]
    assert front.hostname in text and "OPENNEBULA_HOSTNAME" in text, text[-3000:]
    assert "supervisord" not in text


def test_a_critical_program_that_fails_ends_the_container_non_zero_naming_it(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    # Another process of the pod already holds oned's port: oned exits at every start until
    # supervisord gives up on it (FATAL).
    blocker = DockerContainer(images.helper).with_command(
        ["python3", "-m", "http.server", "2633", "--bind", "0.0.0.0"])
    blocker.with_kwargs(network_mode=pod.network_mode)
    engine.start(blocker)
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    box = start_frontend(engine, images.current, pod, front, engine.volume())
    code, _ = tier.wait_exit(box, 300)
    text = tier.logs(box)
    assert code == CRITICAL_FAILURE, text[-3000:]
    assert "oned" in text.strip().splitlines()[-1], text[-1500:]


def test_an_unwritable_emptydir_is_refused_naming_the_path_and_the_fix(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    # /etc/one mounted root-owned 0750, as podman's tmpfs leaves it: uid 9869 cannot use it.
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    scratch = tier.empty_dirs(engine, front)
    scratch["/etc/one"] = engine.volume(owner="0:0", mode="0750")
    box = engine.start(tier.frontend_container(engine, images.current, pod, front,
                                               engine.volume(), scratch=scratch))
    code, _ = tier.wait_exit(box, 120)
    text = tier.logs(box)
    assert code == 3, text[-3000:]
    assert "unexpected error" not in text
    assert "/etc/one" in text and "emptyDir" in text, text[-2000:]
