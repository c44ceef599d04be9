"""Cost of ``onerun probe readiness`` next to the floor a probe can reach.

Starts a local XML-RPC server that answers like oned (a thread of this process, so its CPU
is not counted), then runs, interleaved, with the same interpreter and against the same
endpoint:
  1. ``python -c pass``: interpreter start-up alone;
  2. a minimal stdlib-only client: xmlrpc.client, one ``one.user.info(session, 0, False)``;
  3. ``python -m onerun probe readiness``: two calls (one.user.info and one.zone.raftstatus);
  4. ``python -m onerun probe startup`` (for information): the same single call as row 2.
Each child's wall time and CPU time (user + system, from its own rusage) are recorded over
--runs runs, peak RSS over a few more runs under GNU time (when /usr/bin/time exists);
medians decide the target, means are printed too.

Target: the readiness probe's median CPU time within 1.5x of the minimal client's.
Exit status 1 when the target is not met. Run: ``.venv/bin/python bench/bench_probe.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCServer

TARGET_RATIO = 1.5
GNU_TIME = "/usr/bin/time"  # Debian package `time`; without it peak RSS is not reported
RSS_RUNS = 5
SESSION = "oneadmin:benchpass"
USER0 = (
    "<USER><ID>0</ID><GID>0</GID><GROUPS><ID>0</ID></GROUPS><GNAME>oneadmin</GNAME>"
    "<NAME>oneadmin</NAME><PASSWORD><![CDATA[9a2343884bf4fdf9ec9d1f9e32fb2774]]></PASSWORD>"
    "<AUTH_DRIVER><![CDATA[core]]></AUTH_DRIVER><ENABLED>1</ENABLED><TEMPLATE/></USER>"
)
RAFT_SOLO = (
    "<RAFT><SERVER_ID>-1</SERVER_ID><STATE>0</STATE><TERM>0</TERM><VOTEDFOR>-1</VOTEDFOR>"
    "<COMMIT>0</COMMIT><LOG_INDEX>-1</LOG_INDEX><LOG_TERM>-1</LOG_TERM>"
    "<FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>"
)
# The floor: what any Python probe must do at least (read one_auth, one call, check it).
MINIMAL_CLIENT = """
import os, sys, xmlrpc.client
session = open(os.environ["ONE_AUTH"]).readline().strip()
reply = xmlrpc.client.ServerProxy(os.environ["ONE_XMLRPC"]).one.user.info(session, 0, False)
sys.exit(0 if reply[0] and "<ID>0</ID>" in reply[1] else 1)
"""


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


def start_fake_oned() -> tuple[_Server, str]:
    """A server answering one.user.info and one.zone.raftstatus with oned's response arrays."""
    server = _Server(("127.0.0.1", 0), logRequests=False)

    def user_info(session: str, user_id: int, decrypt: bool = False) -> list[object]:
        if session != SESSION or user_id != 0:
            return [False, "[one.user.info] User couldn't be authenticated", 0x100, -1, -1]
        return [True, USER0, 0]

    def raftstatus(session: str) -> list[object]:
        return [True, RAFT_SOLO, 0]

    server.register_function(user_info, "one.user.info")
    server.register_function(raftstatus, "one.zone.raftstatus")
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/RPC2"


@dataclass
class Row:
    label: str
    argv: list[str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)

    def run_once(self, env: dict[str, str], cwd: str) -> None:
        """One run's wall and CPU time; its own rusage from wait4."""
        began = time.perf_counter()
        child = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        self.wall.append(time.perf_counter() - began)
        child.returncode = os.waitstatus_to_exitcode(status)
        output = child.stdout.read().decode() if child.stdout else ""
        if child.stdout:
            child.stdout.close()
        if child.returncode != 0:
            raise SystemExit(f"{self.label} failed (exit {child.returncode}): {output.strip()}")
        self.cpu.append(usage.ru_utime + usage.ru_stime)

    def measure_rss(self, env: dict[str, str], cwd: str) -> None:
        """Peak RSS through GNU time, whose own small process forks the command.

        A child forked straight from this process inherits this process's peak in its
        ru_maxrss (Linux keeps the pre-exec high-water mark), hiding the child's own.
        """
        done = subprocess.run([GNU_TIME, "-f", "%M", *self.argv], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              check=True)
        self.rss.append(int(done.stderr.strip().splitlines()[-1]) / 1024)  # KiB


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:6.1f} {statistics.fmean(values) * 1000:6.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    server, endpoint = start_fake_oned()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        auth = root / "var/lib/one/.one/one_auth"
        auth.parent.mkdir(parents=True)
        auth.write_text(SESSION + "\n")
        auth.chmod(0o600)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ONE_XMLRPC": endpoint,
               "ONE_AUTH": str(auth), "ONERUN_ROOT": str(root)}
        rows = [
            Row("python -c pass", [python, "-c", "pass"]),
            Row("minimal xmlrpc client (1 call)", [python, "-c", MINIMAL_CLIENT]),
            Row("onerun probe readiness (2 calls)",
                [python, "-m", "onerun", "probe", "readiness"]),
            Row("onerun probe startup (1 call)", [python, "-m", "onerun", "probe", "startup"]),
        ]
        for _ in range(3):  # warm the page cache and .pyc files
            for row in rows:
                row.run_once(env, tmp)
                row.wall.clear()
                row.cpu.clear()
        for _ in range(args.runs):
            for row in rows:  # interleaved: a busy moment hits every row alike
                row.run_once(env, tmp)
        if os.access(GNU_TIME, os.X_OK):
            for _ in range(RSS_RUNS):
                for row in rows:
                    row.measure_rss(env, tmp)
    server.shutdown()

    print(f"interpreter: {python} ({sys.version.split()[0]}), {args.runs} runs each, "
          f"endpoint {endpoint}")
    print(f"{'':34s} {'wall ms':>13s} {'CPU ms':>13s} {'peak RSS MiB':>13s}")
    print(f"{'':34s} {'median  mean':>13s} {'median  mean':>13s} {'median':>13s}")
    for row in rows:
        rss = f"{statistics.median(row.rss):13.1f}" if row.rss else f"{'n/a':>13s}"
        print(f"{row.label:34s} {ms(row.wall)} {ms(row.cpu)} {rss}")
    floor, minimal, readiness, startup = (statistics.median(row.cpu) for row in rows)
    wall_minimal, wall_readiness = (statistics.median(rows[i].wall) for i in (1, 2))
    print(f"ratios (median CPU): readiness/minimal {readiness / minimal:.2f}x, "
          f"startup/minimal {startup / minimal:.2f}x, minimal/pass {minimal / floor:.2f}x; "
          f"readiness/minimal wall {wall_readiness / wall_minimal:.2f}x")
    print("note: the readiness probe makes two API calls, the minimal client one; "
          "the startup row is the like-for-like comparison.")
    met = readiness <= TARGET_RATIO * minimal
    print(f"target: readiness probe CPU within {TARGET_RATIO}x of the minimal client's: "
          f"{'met' if met else 'NOT met'} ({readiness / minimal:.2f}x)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
