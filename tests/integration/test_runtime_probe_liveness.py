"""onerun probe liveness against a real supervisord (PyPI supervisor) running stand-ins.

Each supervisord runs under a throwaway root with its socket where onerun puts it
(R/run/onerun/supervisor.sock) and small stand-in programs named like the services.
The probe runs as ``python -m onerun probe liveness --root R``, as Kubernetes would run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testlib import stop_process_tree

PROJECT = Path(__file__).resolve().parents[2]
SUPERVISORD = Path(sys.executable).parent / "supervisord"

# Stand-ins: shell scripts named plainly, doing only what the probe can observe.
STAYS_UP = (
    "#!/bin/sh\n# stand-in for {name} (tests only): stays up, serves nothing\nexec sleep 600\n"
)
EXITS_AT_ONCE = "#!/bin/sh\n# stand-in for {name} (tests only): fails at once\nexit 1\n"

Programs = dict[str, dict[str, str]]


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Supervisord:
    """A real supervisord under ``root`` with the given programs; stopped by ``stop``."""

    def __init__(self, root: Path, programs: Programs) -> None:
        self.root = root
        self.sock = root / "run/onerun/supervisor.sock"
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        (root / "log").mkdir(exist_ok=True)
        sections = [
            f"[unix_http_server]\nfile={self.sock}\nchmod=0700\n",
            f"[supervisord]\nnodaemon=true\nlogfile={root}/log/supervisord.log\n"
            f"pidfile={root}/run/onerun/supervisord.pid\nchildlogdir={root}/log\n",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        ]
        for name, options in programs.items():
            body = "".join(f"{key}={value}\n" for key, value in options.items())
            sections.append(f"[program:{name}]\n{body}")
        self.conf = root / "run/onerun/supervisord.conf"
        self.conf.write_text("\n".join(sections))
        self.process = subprocess.Popen([str(SUPERVISORD), "-n", "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> xmlrpc.client.ServerProxy:
        """supervisor's own client (independent of the probe's transport under test)."""
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def wait_for(self, states: dict[str, str], timeout: float = 15) -> None:
        """Until every named program is in the given state."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"supervisord exited {self.process.returncode}")
            try:
                info = self.client().supervisor.getAllProcessInfo()
                seen = {process["name"]: process["statename"] for process in info}
            except OSError:
                pass
            if all(seen.get(name) == state for name, state in states.items()):
                return
            time.sleep(0.1)
        raise AssertionError(f"supervisord programs never reached {states}: {seen}")

    def uptime(self, name: str) -> int:
        for process in self.client().supervisor.getAllProcessInfo():
            if process["name"] == name:
                return int(process["now"]) - int(process["start"])
        raise AssertionError(f"no program {name}")

    def stop(self) -> None:
        stop_process_tree(self.process, timeout=20)


def stand_in(root: Path, name: str, template: str) -> str:
    path = root / "usr/bin" / f"{name}-stand-in"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template.format(name=name))
    path.chmod(0o755)
    return str(path)


def running(root: Path, name: str) -> dict[str, str]:
    return {"command": stand_in(root, name, STAYS_UP), "startsecs": "0",
            "stopwaitsecs": "2"}


def one_shot_failing(root: Path, name: str) -> dict[str, str]:
    return {"command": stand_in(root, name, EXITS_AT_ONCE), "startsecs": "1",
            "startretries": "0", "autorestart": "false"}


def liveness(root: Path, *extra: str, xmlrpc_port: int | None = None) -> tuple[int, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("ONE_XMLRPC", "ONE_AUTH", "ONERUN_ROOT")}
    if xmlrpc_port is not None:
        env["ONE_XMLRPC"] = f"http://127.0.0.1:{xmlrpc_port}/RPC2"
    done = subprocess.run(
        [sys.executable, "-m", "onerun", "probe", "liveness", "--root", str(root), *extra],
        capture_output=True, text=True, cwd=PROJECT, env=env, timeout=20, check=False,
    )
    assert done.stdout.count("\n") == 1, done.stdout + done.stderr
    return done.returncode, done.stdout.strip()


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Callable[..., Supervisord]]:
    if not SUPERVISORD.exists():
        pytest.skip(f"{SUPERVISORD} is absent (pip install supervisor into the venv)")
    started: list[Supervisord] = []

    def start(programs: Programs, name: str = "root") -> Supervisord:
        instance = Supervisord(tmp_path / name, programs)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


def test_running_services_are_alive_and_stopped_supervisord_is_not(
        supervisord: Callable[..., Supervisord], tmp_path: Path) -> None:
    root = tmp_path / "root"
    sup = supervisord({
        "oned": running(root, "oned"),
        "hem": running(root, "hem"),
        "fireedge": running(root, "fireedge"),
        "onerun-logs": running(root, "onerun-logs"),
    })
    sup.wait_for({"oned": "RUNNING", "hem": "RUNNING", "onerun-logs": "RUNNING"})

    code, out = liveness(root, xmlrpc_port=refused_port())
    assert code == 0, out
    assert out.startswith("alive: oned RUNNING for ")  # within the default 60 s grace

    sup.stop()
    assert not sup.sock.exists()
    code, out = liveness(root)
    assert code == 1
    assert out == f"not alive: supervisord is not running ({sup.sock} is absent)"


def test_oned_running_past_the_grace_needs_its_port(
        supervisord: Callable[..., Supervisord], tmp_path: Path) -> None:
    root = tmp_path / "root"
    sup = supervisord({"oned": running(root, "oned"), "hem": running(root, "hem")})
    sup.wait_for({"oned": "RUNNING"})
    while sup.uptime("oned") < 2:
        time.sleep(0.2)

    port = refused_port()
    code, out = liveness(root, "--grace", "1", xmlrpc_port=port)
    assert code == 1
    assert f"but 127.0.0.1:{port} refuses connections" in out

    with socket.create_server(("127.0.0.1", 0)) as listener:
        code, out = liveness(root, "--grace", "1", xmlrpc_port=listener.getsockname()[1])
    assert code == 0, out
    assert "accepts connections" in out

    # The same refused port within a longer grace: a slow start is not a death.
    code, out = liveness(root, "--grace", "300", xmlrpc_port=port)
    assert code == 0, out


def test_oned_starting_is_alive(supervisord: Callable[..., Supervisord], tmp_path: Path) -> None:
    root = tmp_path / "root"
    sup = supervisord({"oned": {**running(root, "oned"), "startsecs": "120"}})
    sup.wait_for({"oned": "STARTING"})
    code, out = liveness(root, xmlrpc_port=refused_port())
    assert (code, out) == (0, "alive: oned STARTING under supervisord")


def test_fatal_service_that_is_not_critical_leaves_the_pod_alive(
        supervisord: Callable[..., Supervisord], tmp_path: Path) -> None:
    """As the event listener does: a broken FireEdge must not get oned restarted."""
    root = tmp_path / "root"
    sup = supervisord({"oned": running(root, "oned"), "ssh-agent": running(root, "ssh-agent"),
                       "fireedge": one_shot_failing(root, "fireedge"),
                       "hem": one_shot_failing(root, "hem"),
                       "oneflow": running(root, "oneflow")})
    sup.wait_for({"oned": "RUNNING", "fireedge": "FATAL", "hem": "FATAL", "oneflow": "RUNNING"})
    code, out = liveness(root, xmlrpc_port=refused_port())
    assert code == 0, out
    assert out.startswith("alive: oned RUNNING for ")
    assert out.endswith("; FATAL, not critical: fireedge, hem")


@pytest.mark.parametrize("critical", ["ssh-agent", "onerun-post-start"])
def test_fatal_critical_program_is_not_alive(supervisord: Callable[..., Supervisord],
                                             tmp_path: Path, critical: str) -> None:
    root = tmp_path / "root"
    sup = supervisord({"oned": running(root, "oned"), critical: one_shot_failing(root, critical),
                       "fireedge": one_shot_failing(root, "fireedge")})
    sup.wait_for({"oned": "RUNNING", critical: "FATAL", "fireedge": "FATAL"})
    code, out = liveness(root)
    assert (code, out) == (1, f"not alive: supervisord reports FATAL: {critical}")


def test_fatal_oned_is_not_alive(supervisord: Callable[..., Supervisord],
                                 tmp_path: Path) -> None:
    root = tmp_path / "root"
    sup = supervisord({"oned": one_shot_failing(root, "oned")})
    sup.wait_for({"oned": "FATAL"})
    code, out = liveness(root)
    assert (code, out) == (1, "not alive: supervisord reports FATAL: oned")


def test_supervisord_without_oned_is_not_alive(supervisord: Callable[..., Supervisord],
                                              tmp_path: Path) -> None:
    root = tmp_path / "root"
    sup = supervisord({"fireedge": running(root, "fireedge")})
    sup.wait_for({"fireedge": "RUNNING"})
    assert liveness(root) == (1, "not alive: supervisord runs no program named oned")


def test_stale_socket_is_not_alive(tmp_path: Path) -> None:
    """supervisord killed hard leaves its socket file behind: nothing answers on it."""
    sock = tmp_path / "root/run/onerun/supervisor.sock"
    sock.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock))
    code, out = liveness(tmp_path / "root")
    assert code == 1
    assert out == f"not alive: supervisord is not running ({sock} refuses connections)"


def test_maintenance_still_needs_supervisord(tmp_path: Path) -> None:
    """In maintenance OpenNebula is stopped on purpose, but a dead supervisord is dead."""
    flag = tmp_path / "root/run/onerun/maintenance"
    flag.parent.mkdir(parents=True)
    flag.write_text("")
    code, out = liveness(tmp_path / "root")
    assert code == 1
    assert "supervisord is not running" in out


def test_an_oned_whose_api_stays_silent_is_dead_only_after_the_threshold(
        supervisord: Callable[..., Supervisord], tmp_path: Path) -> None:
    """A wedged oned: its port accepts (the kernel queues connections in the backlog)
    but nothing ever answers. Not alive once the API has been silent for the threshold,
    never before; the state lives in a small file under the runtime directory."""
    root = tmp_path / "root"
    sup = supervisord({"oned": running(root, "oned")})
    sup.wait_for({"oned": "RUNNING"})
    while sup.uptime("oned") < 2:
        time.sleep(0.2)
    with socket.create_server(("127.0.0.1", 0), backlog=16) as wedged:  # never accept()s
        port = wedged.getsockname()[1]
        args = ("--grace", "1", "--api-threshold", "4", "--timeout", "1")
        code, out = liveness(root, *args, xmlrpc_port=port)
        assert code == 0, out
        assert "has not answered" in out
        state = root / "run/onerun/liveness.json"
        assert state.is_file()
        time.sleep(2)
        code, out = liveness(root, *args, xmlrpc_port=port)
        assert code == 0, out  # 2 s of silence, the threshold is 4
        time.sleep(3)
        code, out = liveness(root, *args, xmlrpc_port=port)
        assert code == 1
        assert "its API has answered nothing for" in out and "threshold 4 s" in out

    # oned answers again (any XML-RPC answer counts): alive, and the count starts over.
    from xmlrpc.server import SimpleXMLRPCServer

    server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
    server.register_function(lambda *args: [False, "[one.user.info] not authorized", 0x100],
                             "one.user.info")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        code, out = liveness(root, *args, xmlrpc_port=port)
        assert code == 0, out
        assert "API answered" in out
    finally:
        server.shutdown()
        server.server_close()
