"""A real supervisord with onerun's rendered config, stand-in OpenNebula programs under a
throwaway root, and onerun's own helpers (follower, listener, wait-oned, post-start).

The stand-ins are small Python scripts, named as stand-ins in their output: they record
their uid, environment and start/stop times, log to stdout and to their log files, and
the oned stand-in answers one.user.info / one.user.passwd on a local XML-RPC port.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testlib import descendants, stop_process_tree

from onerun.layout import Layout
from onerun.marker import read_start_record
from onerun.plan import ApplyContext
from onerun.runtime import services
from onerun.runtime.services import plan_programs
from onerun.runtime.supervisor import (
    stop_budget_seconds,
    supervisor_actions,
)
from onerun.settings import load_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs supervisord as root with user=")

PROJECT = Path(__file__).resolve().parents[2]
CANARY = "canary-7f3a9c0e-do-not-leak"

STAND_IN = r'''#!/usr/bin/python3
"""STAND-IN for an OpenNebula program (tests only): records itself, logs, waits for SIGTERM."""
import json, os, signal, subprocess, sys, threading, time
RECORDS = {records!r}
LOG_DIR = {log_dir!r}
LOG_FILE = {{"oned": "oned.log", "hem": "onehem.log", "fireedge": "fireedge.log",
            "oneflow": "oneflow.log", "onegate": "onegate.log"}}
DIRS = {{"onehem": "hem", "fireedge": "fireedge", "oneflow": "oneflow", "onegate": "onegate"}}
base = os.path.basename(sys.argv[0])
name = base
if base in ("ruby", "node"):
    name = next(DIRS[p] for p in sys.argv[1].split("/") if p in DIRS)
if os.path.exists(f"{{RECORDS}}/fail-{{name}}"):
    print(f"stand-in {{name}} failing on purpose", flush=True)
    sys.exit(1)
record = {{"name": name, "uid": os.getuid(), "gid": os.getgid(), "argv": sys.argv,
          "env": dict(os.environ), "started": time.time()}}
if name == "oned" and os.environ.get("SSH_AUTH_SOCK"):
    for _ in range(150):  # the agent starts alongside oned and loads the key a bit later
        agent = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True)
        if agent.returncode == 0:
            break
        time.sleep(0.1)
    record["ssh_add"] = agent.returncode
def stop(signum, frame):
    with open(f"{{RECORDS}}/{{name}}.stop", "w") as f:
        f.write(str(time.time()))
    time.sleep(1.0 if name == "oned" else 0.2)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
if name == "oned":
    from xmlrpc.server import SimpleXMLRPCServer
    port = int(os.environ["ONE_XMLRPC"].rsplit(":", 1)[1].split("/")[0])
    server = SimpleXMLRPCServer(("127.0.0.1", port), logRequests=False, allow_none=True)
    def info(session, uid, decrypt):
        return [True, "<USER><ID>0</ID></USER>", 0]
    def passwd(session, uid, password):
        with open(f"{{RECORDS}}/passwd.json", "w") as f:
            json.dump([uid, password], f)
        return [True, uid, 0]
    server.register_function(info, "one.user.info")
    server.register_function(passwd, "one.user.passwd")
    threading.Thread(target=server.serve_forever, daemon=True).start()
with open(f"{{RECORDS}}/{{name}}.json", "w") as f:
    json.dump(record, f)
print(f"stand-in {{name}} started on stdout", flush=True)
print(f"stand-in {{name}} says hello on stderr", file=sys.stderr, flush=True)
if name in LOG_FILE:
    with open(f"{{LOG_DIR}}/{{LOG_FILE[name]}}", "a") as f:
        f.write(f"stand-in {{name}} wrote its log file\n")
while True:
    time.sleep(0.1)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runs_as_oneadmin(argv: list[str]) -> bool:
    result = subprocess.run(["runuser", "-u", "oneadmin", "--", *argv],
                            capture_output=True, check=False)
    return result.returncode == 0


@pytest.fixture
def root(oneadmin_user: pwd.struct_passwd,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A root oneadmin can traverse (pytest's tmp dirs are 0700), with stand-ins."""
    base = Path(tempfile.mkdtemp(prefix="onerun-sv-"))
    base.chmod(0o755)
    r = base / "root"
    uid, gid = oneadmin_user.pw_uid, oneadmin_user.pw_gid
    records = base / "records"
    for directory, mode in ((r / "var/lib/one", 0o750), (r / "var/lib/one/.one", 0o700),
                            (r / "var/lib/one/.ssh", 0o700), (r / "run/one", 0o750),
                            (r / "var/log/one", 0o755), (records, 0o755)):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(mode)
        os.chown(directory, uid, gid)
    (r / "var/lib/one/.one/one_auth").write_text("oneadmin:stand-in-password\n")
    os.chown(r / "var/lib/one/.one/one_auth", uid, gid)
    script = STAND_IN.format(records=str(records), log_dir=str(r / "var/log/one"))
    for path in ("usr/bin/oned", "usr/bin/ruby", "usr/bin/node", "usr/share/one/guacd/sbin/guacd"):
        (r / path).parent.mkdir(parents=True, exist_ok=True)
        (r / path).write_text(script)
        (r / path).chmod(0o755)
    for path in ("usr/lib/one/onehem/onehem-server.rb", "usr/lib/one/fireedge/dist/index.js",
                 "usr/lib/one/oneflow/oneflow-server.rb", "usr/lib/one/onegate/onegate-server.rb"):
        (r / path).parent.mkdir(parents=True, exist_ok=True)
        (r / path).write_text("# stand-in: the ruby/node stand-in reads only this path\n")
    for tool in ("ssh-agent", "ssh-add"):
        real = shutil.which(tool)
        if real:
            (r / "usr/bin" / tool).symlink_to(real)
    key = r / "var/lib/one/.ssh/id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    for path in (key, key.with_suffix(".pub")):
        os.chown(path, uid, gid)
    # The venv's interpreter may live where oneadmin cannot reach (/root): call onerun back
    # through the system python3 with the same sources and site-packages then.
    if not _runs_as_oneadmin([sys.executable, "-c", "import onerun"]):
        site = next(p for p in sys.path if p.endswith("site-packages") and "venv" in p)
        launcher = base / "onerun-launcher"
        launcher.write_text(f'#!/bin/sh\nPYTHONPATH={PROJECT}:{site} '
                            f'exec /usr/bin/python3 -m onerun "$@"\n')
        launcher.chmod(0o755)
        if not _runs_as_oneadmin([str(launcher), "version"]):
            pytest.skip("oneadmin can run neither this interpreter nor /usr/bin/python3")
        monkeypatch.setattr(services, "onerun_argv", lambda: [str(launcher)])
    yield r
    shutil.rmtree(base, ignore_errors=True)


class Supervisord:
    """supervisord read through a pipe: its stdout_logfile=/dev/stdout reopens a regular file
    with an offset of its own, and writes through the two offsets overwrite each other."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, what: Callable[[], bool], timeout: float, label: str) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {label}; output:\n" + "\n".join(self.lines))
            time.sleep(0.1)

    def has_line(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self) -> None:
        """Stop as Kubernetes does (SIGTERM, supervisord stops its programs); if that fails,
        kill every descendant too, so a failed test leaves no stand-in running."""
        stop_process_tree(self.proc)


def _start(root: Path, environ: dict[str, str], cwd: Path | None = None,
           **plan: object) -> tuple[Supervisord, list]:
    settings = load_settings({}, root=str(root))
    layout = Layout.from_env(root)
    programs = plan_programs(settings, layout, maintenance=False,
                             heal_service_auth=bool(plan.get("heal", True)),
                             record_start=("7.0.0", "7.0.0"))
    account = layout.oneadmin
    ctx = ApplyContext(layout, account.uid, account.gid, lambda _m: None)
    for action in supervisor_actions(settings, layout, programs):
        action.apply(ctx)
    parent = {**os.environ, **environ}
    # The production hand-off: onerun forks the stdout relay, then execs supervisord.
    launcher = [sys.executable, "-c", "import os, sys; from onerun.layout import Layout; "
                "from onerun.runtime.supervisor import exec_supervisord; "
                "exec_supervisord(Layout.from_env(sys.argv[1]), os.environ)", str(root)]
    return Supervisord(launcher, parent, cwd), programs


def test_programs_run_as_oneadmin_log_with_prefixes_heal_and_stop_in_order(root: Path) -> None:
    records = root.parent / "records"
    port = _free_port()
    environ = {"ONE_XMLRPC": f"http://127.0.0.1:{port}/RPC2", "DB_PASSWORD": CANARY,
               "ONEADMIN_PASSWORD": CANARY, "ONE_KEY": CANARY,
               "DB_PASSWORD_FILE": f"/run/secrets/{CANARY}"}
    sv, programs = _start(root, environ)
    try:
        names = ["oned", "hem", "fireedge", "guacd", "oneflow", "onegate"]
        sv.wait_for(lambda: all((records / f"{n}.json").exists() for n in names), 60,
                    "every stand-in to start")
        marker = root / "var/lib/one/.onerun/last-start.json"
        sv.wait_for(marker.exists, 30, "post-start to record the start")
        for text in ("[oned] stand-in oned wrote its log file",
                     "[oned] stand-in oned started on stdout",
                     "[oneflow] stand-in oneflow says hello on stderr",
                     "[fireedge] stand-in fireedge wrote its log file",
                     "[hem] stand-in hem wrote its log file",
                     "[onerun-post-start] onerun info: recorded this start"):
            sv.wait_for(lambda t=text: sv.has_line(t), 15, text)

        # Every program runs as oneadmin with the environment set by the config.
        for name in names:
            record = json.loads((records / f"{name}.json").read_text())
            assert record["uid"] == 9869, name
            assert record["env"]["HOME"] == str(root / "var/lib/one")
            assert record["env"]["USER"] == record["env"]["LOGNAME"] == "oneadmin"
            assert record["env"]["ONE_AUTH"] == str(root / "var/lib/one/.one/one_auth")
        oned = json.loads((records / "oned.json").read_text())
        assert oned["env"]["PATH"].startswith(str(root / "usr/lib/one/sh/override") + ":")
        assert oned["env"]["SSH_AUTH_SOCK"] == str(root / "run/one/ssh-agent.sock")
        assert oned["ssh_add"] == 0  # the agent holds oneadmin's key

        # No secret variable reached supervisord or any process under it.
        for pid in descendants(sv.proc.pid):
            try:
                assert CANARY.encode() not in Path(f"/proc/{pid}/environ").read_bytes(), pid
            except FileNotFoundError:
                continue
        assert not any(CANARY in line for line in sv.lines)

        # post-start healed serveradmin: oned got sha256 of the secret in the files.
        uid, stored = json.loads((records / "passwd.json").read_text())
        assert uid == 1
        for name in ("sunstone_auth", "onegate_auth", "oneflow_auth"):
            path = root / "var/lib/one/.one" / name
            user, secret = path.read_text().strip().split(":", 1)
            assert user == "serveradmin"
            assert hashlib.sha256(secret.encode()).hexdigest() == stored
            assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_uid == 9869
        assert read_start_record(marker) is not None

        # SIGTERM: services first, oned last, within the stated budget.
        started = time.time()
        sv.proc.send_signal(signal.SIGTERM)
        assert sv.proc.wait(timeout=stop_budget_seconds(programs) + 5) == 0
        elapsed = time.time() - started
        assert elapsed < stop_budget_seconds(programs)
        stops = {n: float((records / f"{n}.stop").read_text()) for n in names}
        assert max(stops[n] for n in names if n != "oned") < stops["oned"]
        assert stops["onegate"] < stops["oneflow"] < stops["fireedge"] < stops["hem"]
    finally:
        sv.stop()


# README's exit-code table: a critical program failed after the hand-off.
EXIT_CRITICAL = 70


@pytest.mark.parametrize("critical", ["oned", "ssh-agent"])
def test_a_critical_program_that_goes_fatal_ends_the_container_with_its_code(
        root: Path, critical: str) -> None:
    """Not 0: `docker run --restart on-failure` and Kubernetes must see an error."""
    if critical == "ssh-agent":  # an agent that cannot start: its binary fails at once
        agent = root / "usr/bin/ssh-agent"
        agent.unlink()
        agent.write_text("#!/bin/sh\n# stand-in for ssh-agent (tests only): fails\nexit 1\n")
        agent.chmod(0o755)
    else:
        (root.parent / "records" / "fail-oned").touch()
    environ = {"ONE_XMLRPC": f"http://127.0.0.1:{_free_port()}/RPC2"}
    sv, _ = _start(root, environ)
    try:
        assert sv.proc.wait(timeout=60) == EXIT_CRITICAL
        sv._reader.join(timeout=5)
        assert sv.has_line(f"{critical} could not be started (FATAL): critical, stopping")
        last = [line for line in sv.lines if line.strip()][-1]
        assert critical in last and str(EXIT_CRITICAL) in last, sv.lines[-5:]
    finally:
        sv.stop()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` now (those that ended meanwhile left out)."""
    found = []
    for child in descendants(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            continue
        if child != pid and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(child)
    return found


def test_every_program_runs_in_var_lib_one_not_in_onerun_s_directory(root: Path) -> None:
    """As OpenNebula's own units do (WorkingDirectory is oneadmin's home)."""
    records = root.parent / "records"
    elsewhere = root.parent / "where-onerun-was-started"
    elsewhere.mkdir()
    environ = {"ONE_XMLRPC": f"http://127.0.0.1:{_free_port()}/RPC2"}
    sv, _ = _start(root, environ, cwd=elsewhere)
    try:
        names = ["oned", "hem", "fireedge", "guacd", "oneflow", "onegate"]
        sv.wait_for(lambda: all((records / f"{n}.json").exists() for n in names), 60,
                    "every stand-in to start")
        children = _children(sv.proc.pid)
        assert len(children) >= len(names)
        for pid in children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except FileNotFoundError:  # a one-shot that has just ended
                continue
            assert cwd == str(root / "var/lib/one"), cmdline
    finally:
        sv.stop()


def test_killing_the_log_processes_never_blocks_supervisord(root: Path) -> None:
    """A dead stdout relay used to leave the follower's FIFO without a reader: the
    follower's restart then blocked supervisord (PID 1) for good, SIGTERM included."""
    records = root.parent / "records"
    environ = {"ONE_XMLRPC": f"http://127.0.0.1:{_free_port()}/RPC2"}
    sv, _ = _start(root, environ)
    try:
        sv.wait_for((records / "oned.json").exists, 60, "the stand-in oned")
        sv.wait_for(lambda: sv.has_line("[oned] stand-in oned wrote its log file"), 15,
                    "oned's first log line")
        killed = []
        for pid in descendants(sv.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            relay = any(b"stdout_relay" in arg for arg in argv)
            follower = b"logs" in argv and b"--follow" in argv
            if pid != sv.proc.pid and (relay or follower):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        assert killed
        time.sleep(2)  # supervisord restarts what it runs
        with open(root / "var/log/one/oned.log", "a") as log:
            log.write("written after the log processes were killed\n")
        sv.wait_for(lambda: sv.has_line("[oned] written after the log processes were killed"),
                    20, "a line written after the kill")
        sv.proc.send_signal(signal.SIGTERM)
        assert sv.proc.wait(timeout=45) == 0
    finally:
        sv.stop()


def test_root_never_writes_through_links_oneadmin_planted_in_the_log_directory(
        root: Path) -> None:
    """/var/log/one belongs to oneadmin: a link there must not make root write elsewhere."""
    records = root.parent / "records"
    protected = root.parent / "root-only"
    protected.mkdir(mode=0o700)
    target = protected / "root-file"
    target.write_text("root's own content\n")
    console = root / "var/log/one/console"
    console.mkdir()
    os.chown(console, 9869, 9869)
    planted = {console / "guacd.log": target, root / "var/log/one/monitor.log":
               protected / "created-by-root"}
    for link, destination in planted.items():
        link.symlink_to(destination)
        os.chown(link, 9869, 9869, follow_symlinks=False)
    environ = {"ONE_XMLRPC": f"http://127.0.0.1:{_free_port()}/RPC2"}
    sv, _ = _start(root, environ)
    try:
        sv.wait_for((records / "guacd.json").exists, 60, "the stand-in guacd")
        time.sleep(3)  # guacd's first lines are out
        assert target.read_text() == "root's own content\n"
        assert (target.stat().st_uid, target.stat().st_mode & 0o777) == (0, 0o644)
        assert not (protected / "created-by-root").exists()
        assert all(link.is_symlink() for link in planted)  # oneadmin's links, left alone
    finally:
        sv.stop()


def test_the_agent_runs_directly_under_supervisord(root: Path) -> None:
    """No resident Python parent for ssh-agent (a wrapper cost 24 MiB); keys still load."""
    records = root.parent / "records"
    environ = {"ONE_XMLRPC": f"http://127.0.0.1:{_free_port()}/RPC2"}
    sv, _ = _start(root, environ)
    try:
        sv.wait_for((records / "oned.json").exists, 60, "the stand-in oned")
        agents = [pid for pid in _children(sv.proc.pid)
                  if Path(f"/proc/{pid}/comm").read_text().strip() == "ssh-agent"]
        assert len(agents) == 1
        assert json.loads((records / "oned.json").read_text())["ssh_add"] == 0
    finally:
        sv.stop()
