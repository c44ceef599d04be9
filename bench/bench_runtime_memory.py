"""Benchmark: resident memory of onerun's own processes while the front-end runs.

Lays out a throwaway root with stand-in OpenNebula programs (small Python scripts named
as stand-ins: an oned that answers one.user.info, Ruby/Node services that wait, guacd),
the real ssh-agent and ssh-add when installed, and an SSH key; applies onerun's
supervisord actions and hands over to supervisord exactly as `onerun start` does
(onerun.runtime.supervisor.exec_supervisord). Once every program is up and the one-shots are
done, it samples VmRSS of every process below supervisord five times, a second apart,
and prints the largest sample of each in one table: onerun's own processes (counted),
supervisord (PID 1, excluded) and the rest (stand-ins, ssh-agent; not onerun's).
Target: onerun's processes together at most 35 MiB. Exit 1 when missed.

Every program runs as the invoking user (no `user=` lines): resident memory does not
depend on the uid, and the bench then needs neither root nor an oneadmin account.

    .venv/bin/python bench/bench_runtime_memory.py
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from onerun.layout import Layout
from onerun.plan import ApplyContext
from onerun.runtime.services import plan_programs
from onerun.runtime.supervisor import render_config, supervisor_actions
from onerun.settings import load_settings

TARGET_MIB = 35.0
SAMPLES = 5
ONE_SHOTS = ("onerun-post-start", "onerun-ssh-add")

STAND_IN = '''#!/usr/bin/python3
"""STAND-IN for an OpenNebula program (benchmark only): oned answers one.user.info,
the others wait for SIGTERM."""
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if os.path.basename(sys.argv[0]) == "oned":
    from xmlrpc.server import SimpleXMLRPCServer
    port = int(os.environ["ONE_XMLRPC"].rsplit(":", 1)[1].split("/")[0])
    server = SimpleXMLRPCServer(("127.0.0.1", port), logRequests=False, allow_none=True)
    server.register_function(lambda *a: [True, "<USER><ID>0</ID></USER>", 0], "one.user.info")
    print("stand-in oned listening", flush=True)
    server.serve_forever()
print(f"stand-in {sys.argv[1:] or sys.argv[0]} waiting", flush=True)
while True:
    time.sleep(60)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lay_out(root: Path) -> None:
    """Stand-ins where the image has the programs; the service auth files oned's
    bootstrap would write (so that no service waits for them)."""
    for path in ("usr/bin/oned", "usr/bin/ruby", "usr/bin/node",
                 "usr/share/one/guacd/sbin/guacd"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(STAND_IN)
        (root / path).chmod(0o755)
    for path in ("usr/lib/one/onehem/onehem-server.rb", "usr/lib/one/fireedge/dist/index.js",
                 "usr/lib/one/oneflow/oneflow-server.rb", "usr/lib/one/onegate/onegate-server.rb",
                 "usr/lib/one/oneform/oneform-server.rb", "usr/lib/one/oneks/oneks-server.rb"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("# stand-in: read by nothing\n")
    for tool in ("ssh-agent", "ssh-add"):
        real = shutil.which(tool)
        if real:
            (root / "usr/bin" / tool).symlink_to(real)
    dot_one = root / "var/lib/one/.one"
    dot_one.mkdir(parents=True)
    (dot_one / "one_auth").write_text("oneadmin:bench-stand-in\n")
    for name in ("sunstone_auth", "onegate_auth", "oneflow_auth", "oneform_auth", "oneks_auth"):
        (dot_one / name).write_text("serveradmin:bench-stand-in\n")
    ssh = root / "var/lib/one/.ssh"
    ssh.mkdir(mode=0o700)
    if shutil.which("ssh-keygen"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(ssh / "id_ed25519")], check=True)
    for directory in ("run/one", "var/log/one", "var/lock/one"):
        (root / directory).mkdir(parents=True, exist_ok=True)


def hand_over(root: Path, environ: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    """Prepare supervisord as `onerun start` does, then exec it in a child process whose
    stdout (the container's, in a pod) goes to ``output``."""
    settings = load_settings({}, root=str(root))
    layout = Layout(root)
    programs = plan_programs(settings, layout, maintenance=False, heal_service_auth=False,
                             record_start=None)
    ctx = ApplyContext(layout, os.getuid(), os.getgid(), lambda _message: None)
    for action in supervisor_actions(settings, layout, programs):
        action.apply(ctx)
    layout.supervisor_conf.write_text(render_config(layout, programs, run_as_root=False))
    launcher = ("import os, sys; from onerun.layout import Layout; "
                "from onerun.runtime.supervisor import exec_supervisord; "
                "exec_supervisord(Layout.from_env(sys.argv[1]), os.environ)")
    with output.open("wb") as sink:
        return subprocess.Popen([sys.executable, "-c", launcher, str(root)], env=environ,
                                stdout=sink, stderr=subprocess.STDOUT)


def wait_until_settled(sock: Path, output: Path,
                       timeout: float = 120) -> list[dict[str, object]]:
    """Until every program runs and the one-shots have exited."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        transport = SupervisorTransport(None, None, f"unix://{sock}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            info = proxy.supervisor.getAllProcessInfo()
            states = {str(p["name"]): str(p["statename"]) for p in info}
        except (OSError, http.client.HTTPException, xmlrpc.client.Error):
            states = {}
        if states and all(state == ("EXITED" if name in ONE_SHOTS else "RUNNING")
                          for name, state in states.items()):
            return list(info)
        time.sleep(0.2)
    tail = "\n".join(output.read_text(errors="replace").splitlines()[-30:])
    raise SystemExit(f"programs did not settle within {timeout:g} s: {states}\n{tail}")


def children(pid: int) -> dict[int, int]:
    """Every process below ``pid``, with its parent."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        for child, parent in parents.items():
            if parent == current:
                found[child] = parent
                todo.append(child)
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def argv_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def is_onerun(argv: list[str]) -> bool:
    """onerun's own code: `python -m onerun ...` or `python -m onerun.<module> ...`."""
    return len(argv) >= 3 and argv[1] == "-m" and argv[2].split(".")[0] == "onerun"


def describe(argv: list[str], root: Path) -> str:
    """A short name: onerun's command, or the program with its paths shortened."""
    if is_onerun(argv):
        words = ["onerun", *argv[3:]] if argv[2] == "onerun" else argv[2:]
    elif len(argv) > 1 and argv[1].startswith(str(root)):  # a stand-in script
        words = ["stand-in", *argv[1:]]
    else:
        words = argv
    text = " ".join(Path(word).name if word.startswith("/") else word for word in words)
    return text if len(text) <= 44 else text[:41] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="onerun-bench-mem-"))
    root = base / "root"
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "ONE_XMLRPC": f"http://127.0.0.1:{free_port()}/RPC2"}
    supervisord = None
    try:
        lay_out(root)
        output = base / "stdout.log"
        supervisord = hand_over(root, environ, output)
        names = {int(p["pid"]): str(p["name"])
                 for p in wait_until_settled(Layout(root).supervisor_sock, output)}
        time.sleep(3)  # the follower's first polls
        peak: dict[int, float] = {}
        for _ in range(SAMPLES):
            for pid in children(supervisord.pid) | {supervisord.pid: 0}:
                try:
                    peak[pid] = max(peak.get(pid, 0.0), rss_mib(pid))
                except OSError:
                    continue
            time.sleep(1)
        rows = []
        for pid, mib in peak.items():
            try:
                argv = argv_of(pid)
            except OSError:
                continue
            kind = ("excluded" if pid == supervisord.pid else
                    "onerun" if is_onerun(argv) else "not onerun's")
            rows.append((kind, names.get(pid, "-"), describe(argv, root), mib))
    finally:
        if supervisord is not None:
            supervisord.send_signal(signal.SIGTERM)
            try:
                supervisord.wait(timeout=90)
            except subprocess.TimeoutExpired:
                supervisord.kill()
        shutil.rmtree(base, ignore_errors=True)
    order = {"onerun": 0, "excluded": 1, "not onerun's": 2}
    rows.sort(key=lambda row: (order[row[0]], row[1], row[2]))
    print(f"{'process':<44} {'program':<18} {'RSS MiB':>8}  counted")
    for kind, program, command, mib in rows:
        label = "supervisord (PID 1)" if kind == "excluded" else command
        counted = "yes" if kind == "onerun" else "no: " + ("PID 1" if kind == "excluded"
                                                          else "not onerun's")
        print(f"{label:<44} {program:<18} {mib:8.1f}  {counted}")
    total = sum(mib for kind, *_rest, mib in rows if kind == "onerun")
    count = sum(1 for row in rows if row[0] == "onerun")
    met = total <= TARGET_MIB
    print(f"onerun's own processes: {count}, total RSS {total:.1f} MiB "
          f"(supervisord excluded); target <= {TARGET_MIB:g} MiB: "
          f"{'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
