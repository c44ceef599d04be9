"""kill -9 of the front-end while it writes: the container restarts in its pod (same volume,
same emptyDirs, as the kubelet restarts a crashed container) and becomes ready, with every
write the API acknowledged. Twice: during a burst of API writes, and inside a long sqlite
transaction, which leaves a hot journal behind."""

from __future__ import annotations

import threading
from typing import Any

import tier
from conftest import TierImages

READY = 300.0
USERS = 200

# Runs inside the front-end with onerun's interpreter: one.user.allocate USERS times, one
# line per acknowledged user, flushed at once (the test may kill the container any time).
BURST = f"""
import os, sys
from onerun.runtime.oneapi import OneClient
client = OneClient("http://127.0.0.1:2633/RPC2", os.environ["SESSION"], 30)
for i in range({USERS}):
    name = f"burst-{{i:03d}}"
    client.call("one.user.allocate", name, "Burst-pass-1", "core", [])
    print("ack", name, flush=True)
"""

# A writer that stays inside one transaction with a tiny page cache, so that sqlite spills
# changed pages into one.db before the commit: after a kill, one.db holds half a transaction
# and one.db-journal is hot (only a rollback makes the file consistent again).
LONG_TRANSACTION = """
import sqlite3, time
db = sqlite3.connect("/var/lib/one/one.db", isolation_level=None, timeout=60)
db.execute("PRAGMA cache_size = 1")
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE user_pool SET name = name || '-torn', body = body || ' '")
print("in transaction", flush=True)
time.sleep(600)
"""


def stream_lines(container: Any, argv: list[str], env: dict[str, str]) -> list[str]:
    """Run ``argv`` inside, collecting its output lines in the background; the list fills
    as lines arrive and simply stops growing when the container dies."""
    lines: list[str] = []
    result = container.exec_run(argv, environment=env, stream=True)

    def read() -> None:
        pending = ""
        try:
            for chunk in result.output:
                pending += chunk.decode("utf-8", "replace")
                *done, pending = pending.split("\n")
                lines.extend(done)
        except Exception:  # the container was killed under the stream: expected
            return

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_for(lines: list[str], predicate: Any, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate(lines):
        assert time.monotonic() < deadline, f"not reached within {timeout}s: {lines[-5:]}"
        time.sleep(0.05)


def test_kill_9_loses_no_acknowledged_write_and_recovers_a_hot_journal(
    engine: tier.Engine, images: TierImages, pod: tier.Pod
) -> None:
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    volume = engine.volume()
    scratch = tier.empty_dirs(engine, front)

    def start() -> Any:
        box = engine.start(tier.frontend_container(engine, images.current, pod, front, volume,
                                                   scratch=scratch))
        tier.wait_ready(box, READY)
        return box

    box = start()
    session = {"SESSION": f"oneadmin:{front.password}"}
    lines = stream_lines(box, ["/opt/onerun/bin/python", "-c", BURST], session)
    wait_for(lines, lambda seen: sum(line.startswith("ack") for line in seen) >= USERS // 3, 120)
    box.kill(signal="SIGKILL")
    acknowledged = [line.split()[1] for line in list(lines) if line.startswith("ack")]
    assert USERS // 3 <= len(acknowledged) < USERS, "the kill did not land inside the burst"

    box = start()
    missing = tier.all_present(acknowledged, tier.user_names(box, front.password))
    assert not missing, f"acknowledged but lost after kill -9: {missing}"

    lines = stream_lines(box, ["python3", "-c", LONG_TRANSACTION], {})
    wait_for(lines, lambda seen: "in transaction" in seen, 120)
    box.kill(signal="SIGKILL")
    journal = engine.run_helper("stat -c %s /v/one.db-journal", {volume: "/v"})
    assert int(journal) > 0, "no hot journal was left behind"

    box = start()
    names = tier.user_names(box, front.password)
    assert not [n for n in names if n.endswith("-torn")], "the torn transaction is visible"
    assert not tier.all_present(["oneadmin", *acknowledged], names)
