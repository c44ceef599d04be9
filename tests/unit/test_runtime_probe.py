"""onerun probe startup/readiness against a local XML-RPC server that answers like oned.

The server speaks oned's response arrays (``[true, value, 0]`` or
``[false, message, code, resp_id, replication_idx]``, src/rm/xml-rpc/RequestXRPC.cc in
OpenNebula/one) with a user 0 body as oned 7.0 stores it. Most cases call ``probe.main``
in-process (fast); a few run ``python -m onerun probe`` to cover the real entry point and
exit code.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCServer

import pytest

from onerun.runtime import probe

PROJECT = Path(__file__).resolve().parents[2]
SESSION = "oneadmin:probepass"
USER0 = (
    "<USER><ID>0</ID><GID>0</GID><GROUPS><ID>0</ID></GROUPS><GNAME>oneadmin</GNAME>"
    "<NAME>oneadmin</NAME><PASSWORD><![CDATA[9a2343884bf4fdf9ec9d1f9e32fb2774]]></PASSWORD>"
    "<AUTH_DRIVER><![CDATA[core]]></AUTH_DRIVER><ENABLED>1</ENABLED>"
    "<TEMPLATE><TOKEN_PASSWORD><![CDATA[f2eedba1]]></TOKEN_PASSWORD></TEMPLATE></USER>"
)
USER2 = USER0.replace("<ID>0</ID><GID>", "<ID>2</ID><GID>", 1)
AUTH_FAILED = "[one.user.info] User couldn't be authenticated, aborting call."


def raft(state: int) -> str:
    return (f"<RAFT><SERVER_ID>-1</SERVER_ID><STATE>{state}</STATE><TERM>0</TERM>"
            "<VOTEDFOR>-1</VOTEDFOR><COMMIT>0</COMMIT><LOG_INDEX>-1</LOG_INDEX>"
            "<LOG_TERM>-1</LOG_TERM><FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>")


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


class FakeOned:
    """A threaded XML-RPC server answering one.user.info and one.zone.raftstatus like oned."""

    def __init__(self) -> None:
        self.user_body = USER0
        self.raft_state = 0
        self.raft_body: str | None = None
        self.hang = False
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self._release = threading.Event()
        self.server = _Server(("127.0.0.1", 0), logRequests=False, allow_none=True)
        self.server.register_function(self.user_info, "one.user.info")
        self.server.register_function(self.raftstatus, "one.zone.raftstatus")
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def _wait_if_hanging(self) -> None:
        if self.hang:
            self._release.wait(10)

    def user_info(self, session: str, user_id: int, decrypt: bool = False) -> list[object]:
        self.calls.append(("one.user.info", (session, user_id, decrypt)))
        self._wait_if_hanging()
        if session != SESSION:
            return [False, AUTH_FAILED, 0x100, -1, -1]
        return [True, self.user_body, 0]

    def raftstatus(self, session: str) -> list[object]:
        self.calls.append(("one.zone.raftstatus", (session,)))
        self._wait_if_hanging()
        if session != SESSION:
            return [False, AUTH_FAILED.replace("user.info", "zone.raftstatus"), 0x100, -1, -1]
        return [True, self.raft_body if self.raft_body is not None else raft(self.raft_state), 0]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def oned() -> Iterator[FakeOned]:
    server = FakeOned()
    yield server
    server.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root whose one_auth holds SESSION, as onerun start writes it."""
    dot_one = tmp_path / "root/var/lib/one/.one"
    dot_one.mkdir(parents=True)
    (dot_one / "one_auth").write_text(SESSION + "\n")
    return tmp_path / "root"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, oned: FakeOned) -> FakeOned:
    """Point the probe at the fake oned; no ONE_AUTH, so one_auth comes from the root."""
    monkeypatch.setenv("ONE_XMLRPC", oned.endpoint)
    monkeypatch.delenv("ONE_AUTH", raising=False)
    monkeypatch.delenv("ONERUN_ROOT", raising=False)
    return oned


def run_probe(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = probe.main(list(argv))
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"expected one line, got {out!r}"
    return code, out.strip()


def refused_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", ["startup", "readiness"])
def test_healthy(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str],
                 kind: str) -> None:
    code, out = run_probe(capsys, kind, "--root", str(root))
    assert code == 0, out
    assert out.startswith(("started:", "ready:"))
    assert env.calls[0] == ("one.user.info", (SESSION, 0, False))


def test_readiness_always_asks_raft_status(env: FakeOned, root: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    env.raft_state = 3
    code, out = run_probe(capsys, "readiness", "--root", str(root))
    assert code == 0
    assert "leader" in out
    assert [name for name, _ in env.calls] == ["one.user.info", "one.zone.raftstatus"]


def test_startup_does_not_ask_raft_status(env: FakeOned, root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    env.raft_state = 1
    assert run_probe(capsys, "startup", "--root", str(root))[0] == 0
    assert [name for name, _ in env.calls] == ["one.user.info"]


@pytest.mark.parametrize(("state", "ready"), [(0, True), (1, False), (2, True), (3, True)])
def test_raft_states(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str],
                     state: int, ready: bool) -> None:
    env.raft_state = state
    code, out = run_probe(capsys, "readiness", "--root", str(root))
    assert code == (0 if ready else 1), out
    if not ready:
        assert out == "not ready: raft state candidate: an election is in progress"


def test_unknown_raft_state_is_not_ready(env: FakeOned, root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    env.raft_state = 7
    code, out = run_probe(capsys, "readiness", "--root", str(root))
    assert code == 1
    assert "unknown state '7'" in out


@pytest.mark.parametrize("kind", ["startup", "readiness"])
def test_authentication_failure(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str],
                                kind: str) -> None:
    (root / "var/lib/one/.one/one_auth").write_text("oneadmin:wrong\n")
    code, out = run_probe(capsys, kind, "--root", str(root))
    assert code == 1
    assert "rejected the credentials" in out
    assert "User couldn't be authenticated" in out
    assert "wrong" not in out  # the password itself is never printed


@pytest.mark.parametrize("kind", ["startup", "readiness"])
def test_oned_down(monkeypatch: pytest.MonkeyPatch, root: Path,
                   capsys: pytest.CaptureFixture[str], kind: str) -> None:
    monkeypatch.setenv("ONE_XMLRPC", f"http://127.0.0.1:{refused_port()}/RPC2")
    monkeypatch.delenv("ONE_AUTH", raising=False)
    code, out = run_probe(capsys, kind, "--root", str(root))
    assert code == 1
    assert "refuses connections" in out


@pytest.mark.parametrize("kind", ["startup", "readiness"])
def test_oned_hanging_past_the_deadline(env: FakeOned, root: Path,
                                        capsys: pytest.CaptureFixture[str], kind: str) -> None:
    env.hang = True
    began = time.monotonic()
    code, out = run_probe(capsys, kind, "--root", str(root), "--timeout", "0.3")
    assert time.monotonic() - began < 3
    assert code == 1
    assert "did not answer one.user.info" in out or "no answer within 0.3 s" in out


def test_hang_in_second_call_is_reported(env: FakeOned, root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """raftstatus hanging: the deadline split leaves it the rest, and the probe says which."""
    original = env.raftstatus

    def hanging_raftstatus(session: str) -> list[object]:
        env.hang = True
        return original(session)

    env.server.register_function(hanging_raftstatus, "one.zone.raftstatus")
    code, out = run_probe(capsys, "readiness", "--root", str(root), "--timeout", "0.4")
    assert code == 1
    assert "one.zone.raftstatus" in out


def test_socket_timeouts_alone_bound_a_probe_outside_the_main_thread(
        env: FakeOned, root: Path) -> None:
    """No SIGALRM off the main thread: each call's socket timeout still ends the wait."""
    env.hang = True
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(
        probe.main(["startup", "--root", str(root), "--timeout", "0.3"])))
    worker.start()
    worker.join(5)
    assert result == [1]


@pytest.fixture
def trickling_oned(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An endpoint that sends an HTTP answer one byte every 50 ms: no single read times out."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n" * 100:
                    if stop.is_set():
                        break
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("ONE_XMLRPC", f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2")
    monkeypatch.delenv("ONE_AUTH", raising=False)
    yield "trickling"
    stop.set()
    thread.join(2)
    listener.close()


def test_whole_probe_deadline_holds_against_a_trickling_peer(
        trickling_oned: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    code, out = run_probe(capsys, "readiness", "--root", str(root), "--timeout", "0.5")
    assert time.monotonic() - began < 3
    assert (code, out) == (1, "not ready: no answer within 0.5 s (one.user.info)")


def test_hanging_oned_through_the_real_entry_point(env: FakeOned, root: Path) -> None:
    env.hang = True
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "onerun", "probe", "readiness", "--root", str(root)],
        capture_output=True, text=True, cwd=PROJECT, timeout=10, check=False,
    )
    assert time.monotonic() - began < 3
    assert done.returncode == 1
    assert done.stdout.startswith("not ready:")
    assert "did not answer" in done.stdout or "no answer within" in done.stdout
    assert done.stderr == ""


def test_healthy_through_the_real_entry_point(env: FakeOned, root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onerun", "probe", "readiness", "--root", str(root)],
        capture_output=True, text=True, cwd=PROJECT, timeout=10, check=False,
    )
    assert done.returncode == 0
    assert done.stdout == "ready: oned answers for user 0, raft state solo\n"


def test_body_that_is_not_user_0(env: FakeOned, root: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    env.user_body = USER2
    code, out = run_probe(capsys, "startup", "--root", str(root))
    assert code == 1
    assert out == "not started: one.user.info answered <USER> with ID '2', not user 0"


def test_body_of_another_kind(env: FakeOned, root: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    env.user_body = "<GROUP><ID>0</ID></GROUP>"
    code, out = run_probe(capsys, "readiness", "--root", str(root))
    assert code == 1
    assert "<GROUP>" in out


@pytest.mark.parametrize("body", ["<USER><ID>0</ID>", "not xml at all", ""])
def test_malformed_xml(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str],
                       body: str) -> None:
    env.user_body = body
    code, out = run_probe(capsys, "startup", "--root", str(root))
    assert code == 1
    assert "malformed XML" in out


def test_malformed_raft_xml(env: FakeOned, root: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    env.raft_body = "<RAFT><STATE>3</STATE>"
    code, out = run_probe(capsys, "readiness", "--root", str(root))
    assert code == 1
    assert "one.zone.raftstatus answered malformed XML" in out


def test_missing_one_auth(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = root / "var/lib/one/.one/one_auth"
    auth.unlink()
    code, out = run_probe(capsys, "startup", "--root", str(root))
    assert code == 1
    assert f"cannot read credentials {auth}" in out
    assert env.calls == []


def test_one_auth_not_user_password(env: FakeOned, root: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (root / "var/lib/one/.one/one_auth").write_text("no-colon-here\n")
    code, out = run_probe(capsys, "startup", "--root", str(root))
    assert code == 1
    assert "user:password" in out


def test_one_auth_env_is_honoured(env: FakeOned, root: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    (root / "var/lib/one/.one/one_auth").write_text("oneadmin:wrong\n")
    elsewhere = tmp_path / "elsewhere_auth"
    elsewhere.write_text(SESSION + "\n")
    monkeypatch.setenv("ONE_AUTH", str(elsewhere))
    assert run_probe(capsys, "startup", "--root", str(root))[0] == 0
    assert env.calls[0][1][0] == SESSION


def test_one_xmlrpc_is_honoured(env: FakeOned, root: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """The fixture sets ONE_XMLRPC to the fake's port; unset, the probe goes to port 2633."""
    assert run_probe(capsys, "startup", "--root", str(root))[0] == 0
    assert len(env.calls) == 1
    monkeypatch.delenv("ONE_XMLRPC")
    code, out = run_probe(capsys, "startup", "--root", str(root), "--timeout", "0.3")
    assert len(env.calls) == 1
    if code == 1:  # nothing (or something else) on 2633 here
        assert "127.0.0.1:2633" in out or "no answer within" in out


def test_root_from_onerun_root(env: FakeOned, root: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ONERUN_ROOT", str(root))
    assert run_probe(capsys, "startup")[0] == 0


# Liveness still needs supervisord to answer in maintenance; there is none here (the
# integration test tests/integration/test_start_supervised.py runs one and passes).
@pytest.mark.parametrize(("kind", "healthy"),
                         [("startup", True), ("readiness", False), ("liveness", False)])
def test_maintenance_flag(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str],
                          kind: str, healthy: bool) -> None:
    env.hang = True  # nothing is asked: a stopped oned must not matter
    flag = root / "run/onerun/maintenance"
    flag.parent.mkdir(parents=True)
    flag.write_text("")
    code, out = run_probe(capsys, kind, "--root", str(root))
    assert code == (0 if healthy else 1)
    assert "maintenance" in out
    assert env.calls == []


def write_stand_in_oneuser(root: Path, script: str) -> Path:
    """A stand-in for the Ruby CLI /usr/bin/oneuser under the root."""
    path = root / "usr/bin/oneuser"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n# stand-in for OpenNebula's oneuser CLI (tests only)\n" + script)
    path.chmod(0o755)
    return path


def test_via_cli_success_passes_one_auth(env: FakeOned, root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    record = tmp_path / "argv"
    write_stand_in_oneuser(root, f'echo "$* $ONE_AUTH" > {record}\necho "USER 0 INFORMATION"\n')
    code, out = run_probe(capsys, "liveness", "--root", str(root), "--via", "cli")
    assert (code, out) == (0, "alive: oneuser show 0 succeeded")
    assert record.read_text().split() == ["show", "0", str(root / "var/lib/one/.one/one_auth")]


def test_via_cli_failure(env: FakeOned, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stand_in_oneuser(root, f'echo "{AUTH_FAILED}" >&2\nexit 255\n')
    code, out = run_probe(capsys, "readiness", "--root", str(root), "--via=cli")
    assert code == 1
    assert out == f"not ready: oneuser show 0 exited 255: {AUTH_FAILED}"


def test_via_cli_hanging_child_is_killed_in_time(env: FakeOned, root: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    write_stand_in_oneuser(root, "exec sleep 30\n")
    began = time.monotonic()
    code, out = run_probe(capsys, "startup", "--root", str(root), "--via", "cli",
                          "--timeout", "0.3")
    assert time.monotonic() - began < 3
    assert code == 1
    assert "did not finish" in out or "no answer within" in out


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["startup", "--timeout"], ["startup", "--timeout", "soon"],
    ["startup", "--timeout", "0"], ["startup", "--via", "ruby"], ["startup", "readiness"],
])
def test_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out = run_probe(capsys, *argv)
    assert code == 1
    assert "usage: onerun probe" in out


def test_alarm_is_disarmed_after_the_probe(env: FakeOned, root: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    before = signal.getsignal(signal.SIGALRM)
    run_probe(capsys, "startup", "--root", str(root))
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_xml_fields_reads_direct_children_only() -> None:
    root, fields = probe.xml_fields(USER2)
    assert root == "USER"
    assert fields["ID"] == "2"  # not GROUPS/ID
    assert fields["PASSWORD"] == "9a2343884bf4fdf9ec9d1f9e32fb2774"


def test_probe_path_imports_nothing_heavy(env: FakeOned, root: Path) -> None:
    """The probe must not pull in click, jinja2, pymysql, tenacity or ruamel."""
    code = (
        "import sys\nfrom onerun.entry import main\n"
        f"sys.argv = ['onerun', 'probe', 'readiness', '--root', {str(root)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m == 'onerun.cli' or m.split('.')[0] in "
        "{'click', 'jinja2', 'pymysql', 'tenacity', 'ruamel', 'supervisor'})\n"
        "print('HEAVY', heavy, code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT, env={**os.environ, "ONE_XMLRPC": env.endpoint},
                          timeout=10, check=False)
    assert done.stdout.splitlines()[-1] == "HEAVY [] 0", done.stdout + done.stderr


def _supervisor_reports(monkeypatch: pytest.MonkeyPatch, states: dict[str, str]) -> None:
    """Stand in for supervisord's getAllProcessInfo (the real one: integration tests)."""
    now = int(time.time())
    processes = [{"name": name, "statename": state, "start": now - 5, "now": now}
                 for name, state in states.items()]
    monkeypatch.setattr(probe, "supervisor_processes", lambda socket, deadline: processes)


@pytest.mark.parametrize("broken", ["fireedge", "guacd", "hem", "oneflow", "onegate",
                                    "oneform", "oneks", "onerun-logs"])
def test_liveness_ignores_a_fatal_service_that_is_not_critical(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        broken: str) -> None:
    """As supervisord's hook: a service that stays FATAL leaves the pod (and oned) up."""
    _supervisor_reports(monkeypatch, {"ssh-agent": "RUNNING", "oned": "RUNNING",
                                      broken: "FATAL"})
    code, out = run_probe(capsys, "liveness", "--root", str(tmp_path))
    assert (code, out) == (0, "alive: oned RUNNING for 5 s (port checked after 60 s); "
                              f"FATAL, not critical: {broken}")


@pytest.mark.parametrize("broken", ["oned", "ssh-agent", "onerun-post-start"])
def test_liveness_fails_when_a_critical_program_is_fatal(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        broken: str) -> None:
    _supervisor_reports(monkeypatch, {"ssh-agent": "RUNNING", "oned": "RUNNING",
                                      "fireedge": "FATAL", broken: "FATAL"})
    code, out = run_probe(capsys, "liveness", "--root", str(tmp_path))
    assert (code, out) == (1, f"not alive: supervisord reports FATAL: {broken}")


def test_liveness_and_supervisord_s_hook_share_the_critical_programs(tmp_path: Path) -> None:
    """What supervisord's hook ends the pod for is exactly what liveness fails on."""
    from onerun.catalogue import INSTALLED_BY
    from onerun.layout import Layout
    from onerun.runtime.critical import CRITICAL_PROGRAMS
    from onerun.runtime.services import plan_programs
    from onerun.runtime.supervisor import render_config
    from onerun.settings import load_settings

    for path in INSTALLED_BY.values():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text("")
    programs = plan_programs(load_settings({}, root=str(tmp_path)), Layout(tmp_path),
                             maintenance=False, heal_service_auth=False, record_start=None)
    config = render_config(Layout(tmp_path), programs, run_as_root=False)
    told = next(line.split("=", 1)[1].split() for line in config.splitlines()
                if line.startswith("critical ="))
    assert set(told) == set(CRITICAL_PROGRAMS) == {"oned", "ssh-agent", "onerun-post-start"}


def test_liveness_path_imports_no_catalogue(tmp_path: Path) -> None:
    """Liveness reads the critical names from onerun.runtime.critical, not the whole catalogue."""
    code = (
        "import sys\nfrom onerun.entry import main\n"
        f"sys.argv = ['onerun', 'probe', 'liveness', '--root', {str(tmp_path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('LOADED', sorted(m for m in sys.modules if m in "
        "{'onerun.runtime.critical', 'onerun.runtime.services', 'onerun.settings',"
        " 'typing'}), code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT, timeout=10, check=False)
    # No supervisord under tmp_path: not alive, after the critical names were loaded.
    assert done.stdout.splitlines()[-1] == "LOADED ['onerun.runtime.critical'] 1", done.stdout


def _oned_running_for(monkeypatch: pytest.MonkeyPatch, seconds: int, pid: int = 4242) -> None:
    now = int(time.time())
    processes = [{"name": "oned", "statename": "RUNNING", "pid": pid, "start": now - seconds,
                  "now": now}]
    monkeypatch.setattr(probe, "supervisor_processes", lambda socket, deadline: processes)


def test_liveness_asks_the_api_at_most_once_a_minute_while_it_answers(
        monkeypatch: pytest.MonkeyPatch, env: FakeOned, root: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The probe runs every few seconds: a recent answer spares the call."""
    (root / "run/onerun").mkdir(parents=True)  # onerun start makes it
    _oned_running_for(monkeypatch, 4000)
    code, out = run_probe(capsys, "liveness", "--root", str(root))
    assert (code, out.endswith("accepts connections; its API answered")) == (0, True), out
    assert len(env.calls) == 1
    state = root / "run/onerun/liveness.json"
    assert state.is_file()
    code, out = run_probe(capsys, "liveness", "--root", str(root))
    assert code == 0 and "its API answered 0 s ago" in out, out
    assert len(env.calls) == 1  # no second call
    # Another oned process (restarted, new pid): its own count, so the API is asked again.
    _oned_running_for(monkeypatch, 4000, pid=4343)
    code, out = run_probe(capsys, "liveness", "--root", str(root))
    assert code == 0 and len(env.calls) == 2, out


def test_liveness_that_cannot_keep_its_state_never_fails_on_the_api(
        monkeypatch: pytest.MonkeyPatch, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No evidence of how long the API has been silent, no restart."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accept()s
        monkeypatch.setenv("ONE_XMLRPC", f"http://127.0.0.1:{silent.getsockname()[1]}/RPC2")
        (root / "run").mkdir()
        (root / "run/onerun").write_text("not a directory: the state cannot be written")
        _oned_running_for(monkeypatch, 4000)
        for _ in range(2):
            code, out = run_probe(capsys, "liveness", "--root", str(root), "--api-threshold",
                                  "0.001", "--timeout", "0.5")
            assert code == 0 and "its API has not answered for 0 s" in out, out
