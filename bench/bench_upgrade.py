"""How long a real schema upgrade takes at start, by size, on sqlite and MariaDB: the tier's
previous image (7.0.0) fills a database through the API, then the current image (7.4.0)
starts on it. One table: objects, backup seconds, onedb upgrade seconds, container start to
ready. docs/upgrades.md derives the chart's startup budget from these rows.

    make containers
    DOCKER_HOST=unix:///run/podman/podman.sock \
        .venv/bin/python bench/bench_upgrade.py [USERS TEMPLATES]
"""

from __future__ import annotations

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

# Inside the old front-end: users and templates in batches through system.multicall.
FILL = """
import os, sys, xmlrpc.client
users, templates = int(sys.argv[1]), int(sys.argv[2])
session = os.environ["SESSION"]
server = xmlrpc.client.ServerProxy("http://127.0.0.1:2633/RPC2")
def batch(calls):
    multi = xmlrpc.client.MultiCall(server)
    for method, args in calls:
        getattr(multi, method)(session, *args)
    for answer in multi():
        assert answer[0], answer
for start in range(0, users, 250):
    batch([("one.user.allocate", (f"u{i:05d}", "Bench-pass-1", "core", []))
           for i in range(start, min(users, start + 250))])
for start in range(0, templates, 250):
    batch([("one.template.allocate", (f'NAME="t{i:05d}"\\nCPU="1"\\nMEMORY="128"\\n',))
           for i in range(start, min(templates, start + 250))])
"""


def seconds_between(box: Any, first: str, second: str) -> float:
    """Seconds between the log lines containing ``first`` and ``second``."""
    stamps: dict[str, datetime] = {}
    for line in box.logs(timestamps=True).decode("utf-8", "replace").splitlines():
        when, _, text = line.partition(" ")
        for needle in (first, second):
            if needle in text and needle not in stamps:
                stamps[needle] = tier.parse_stamp(when)
    return (stamps[second] - stamps[first]).total_seconds()


def _first(box: Any, needle: str) -> datetime:
    for line in box.logs(timestamps=True).decode("utf-8", "replace").splitlines():
        when, _, text = line.partition(" ")
        if needle in text:
            return tier.parse_stamp(when)
    raise RuntimeError(f"{needle!r} is not in the log")


def run(engine: tier.Engine, images: Any, backend: str, users: int, templates: int,
        ) -> list[str]:
    versions = sorted(images.frontends, key=lambda v: tuple(map(int, v.split("."))))
    old, new = images.frontends[versions[0]], images.frontends[versions[-1]]
    pod = tier.Pod.create(engine)
    if backend == "sqlite":
        front = tier.chart_frontend({"database": {"type": "sqlite"}})
    else:
        front, db = tier.chart_install({}, DB_HOST="127.0.0.1")
        assert db is not None
        tier.start_mariadb(engine, images.mariadb, pod, db)
    volume = engine.volume()
    box = engine.start(tier.frontend_container(engine, old, pod, front, volume))
    tier.wait_ready(box, 600)
    filled = time.monotonic()
    tier.exec_ok(box, ["/opt/onerun/bin/python", "-c", FILL, str(users), str(templates)],
                 environment={"SESSION": f"oneadmin:{front.password}"})
    filled = time.monotonic() - filled
    box.kill(signal="SIGTERM")
    tier.wait_exit(box, 120)

    box = engine.start(tier.frontend_container(engine, new, pod, front, volume))
    box.reload()
    started = tier.parse_stamp(box.attrs["State"]["StartedAt"])
    tier.wait_ready(box, 3600)
    ready = (datetime.now(started.tzinfo) - started).total_seconds()
    backup = (_first(box, "backed up the database") - started).total_seconds()
    upgrade = seconds_between(box, "upgrading the database", "upgraded the database")
    return [backend, f"{users} users, {templates} templates", f"{filled:.0f} s",
            f"{backup:.1f} s", f"{upgrade:.1f} s", f"{ready:.0f} s"]


def main() -> None:
    users, templates = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (10000, 1000)
    images = testimages.ensure()
    rows = [["backend", "objects", "fill (7.0.0 API)", "start to backup made", "onedb upgrade",
             "start to ready (7.4.0)"]]
    for backend in ("sqlite", "mysql"):
        engine = tier.Engine(docker.from_env(), images.base)
        try:
            rows.append(run(engine, images, backend, users, templates))
        finally:
            engine.cleanup()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
