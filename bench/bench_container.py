"""The image with a real OpenNebula, measured as the chart runs it (the container tier's
images and pods, tests/containers/tier.py). One run prints one table:

- seconds from the container's start to ``onerun probe readiness`` passing, on sqlite and on
  MariaDB, and onerun's own share of it (up to the exec of supervisord);
- ``onerun probe readiness`` next to ``oneuser show 0`` and a minimal stdlib XML-RPC client
  against the same oned, CPU seconds and peak RSS per call (children's rusage, inside the
  container);
- the resident memory of onerun's own processes next to oned's, supervisord apart.

    make containers
    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/bench_container.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "containers"), str(HERE.parent / "tests"),
                str(HERE.parent)]
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import tier  # noqa: E402

import docker  # noqa: E402
from ci import testimages  # noqa: E402

RUNS = 10

# Inside the container: run a command RUNS times, report the children's CPU and peak RSS.
MEASURE = """
import json, os, resource, subprocess, sys
argv, runs = json.loads(sys.argv[1]), int(sys.argv[2])
for _ in range(runs):
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu": (usage.ru_utime + usage.ru_stime) / runs, "rss_kib": usage.ru_maxrss}))
"""

# The minimal client: one stdlib XML-RPC call, what the probe does at the least.
MINIMAL = ("import xmlrpc.client\n"
           "auth = open('/var/lib/one/.one/one_auth').read().strip()\n"
           "xmlrpc.client.ServerProxy('http://127.0.0.1:2633/RPC2').one.user.info(auth, 0)\n")


def start_to_ready(box: Any) -> tuple[float, float]:
    """(seconds to readiness, seconds to the hand-off), both from the container's start."""
    box.reload()
    started = tier.parse_stamp(box.attrs["State"]["StartedAt"])
    while box.exec_run(["onerun", "probe", "readiness"]).exit_code != 0:
        time.sleep(0.25)
    ready = (datetime.now(started.tzinfo) - started).total_seconds()
    for line in box.logs(timestamps=True).decode("utf-8", "replace").splitlines():
        when, _, text = line.partition(" ")
        if "handing over to supervisord" in text:
            return ready, (tier.parse_stamp(when) - started).total_seconds()
    raise RuntimeError("no hand-off line in the log")


def measure(box: Any, argv: list[str]) -> dict[str, float]:
    result = box.exec_run(["python3", "-c", MEASURE, json.dumps(argv), str(RUNS)])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output.decode().strip().splitlines()[-1]))


def memory(box: Any) -> dict[str, int]:
    """RSS in KiB: onerun's own processes, supervisord, oned alone, oned with its children."""
    table = box.exec_run(["ps", "-eo", "pid=,ppid=,rss=,args="]).output.decode()
    rows = [line.split(None, 3) for line in table.splitlines() if line.strip()]
    procs = {int(r[0]): (int(r[1]), int(r[2]), r[3] if len(r) > 3 else "") for r in rows}
    oned = next(pid for pid, (_, _, args) in procs.items() if args.split()[0].endswith("oned"))

    def descends(pid: int) -> bool:
        while pid not in (0, 1):
            if pid == oned:
                return True
            pid = procs.get(pid, (0,))[0]
        return False

    onerun = sum(rss for _, rss, args in procs.values()
                 if "onerun" in args and "supervisord" not in args and "ps -eo" not in args)
    return {
        "onerun": onerun,
        "supervisord": sum(rss for _, rss, args in procs.values() if "supervisord" in args),
        "oned": procs[oned][1],
        "oned+children": sum(rss for pid, (_, rss, _) in procs.items() if descends(pid)),
    }


def main() -> None:
    images = testimages.ensure()
    image = images.frontends[max(images.frontends, key=lambda v: tuple(map(int, v.split("."))))]
    engine = tier.Engine(docker.from_env(), images.base)
    rows: list[tuple[str, str]] = []
    try:
        pod = tier.Pod.create(engine)
        front = tier.chart_frontend({"database": {"type": "sqlite"}})
        box = engine.start(tier.frontend_container(engine, image, pod, front, engine.volume()))
        ready, handoff = start_to_ready(box)
        rows += [("sqlite first install: start to ready", f"{ready:.1f} s"),
                 ("  onerun's share (start to exec of supervisord)", f"{handoff:.1f} s")]
        time.sleep(20)  # let post-start and the first monitoring round settle
        probes = {
            "onerun probe readiness": ["onerun", "probe", "readiness"],
            "minimal stdlib client": ["python3", "-c", MINIMAL],
            "oneuser show 0": ["oneuser", "show", "0"],
        }
        results = {name: measure(box, argv) for name, argv in probes.items()}
        base = results["minimal stdlib client"]["cpu"]
        for name, result in results.items():
            rows.append((f"{name}: CPU per call, peak RSS",
                         f"{result['cpu'] * 1000:.0f} ms ({result['cpu'] / base:.2f}x), "
                         f"{result['rss_kib'] / 1024:.1f} MiB"))
        rss = memory(box)
        rows += [(f"RSS {name}", f"{kib / 1024:.1f} MiB") for name, kib in rss.items()]

        pod = tier.Pod.create(engine)
        front, db = tier.chart_install({}, DB_HOST="127.0.0.1")
        assert db is not None
        tier.start_mariadb(engine, images.mariadb, pod, db)
        box = engine.start(tier.frontend_container(engine, image, pod, front, engine.volume()))
        ready, handoff = start_to_ready(box)
        rows += [("MariaDB first install: start to ready", f"{ready:.1f} s"),
                 ("  onerun's share (start to exec of supervisord)", f"{handoff:.1f} s")]
    finally:
        engine.cleanup()
    width = max(len(name) for name, _ in rows)
    print(f"{'measure (' + image + ')':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
