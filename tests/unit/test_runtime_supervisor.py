"""supervisord config, scrubbed environment, actions, onerun's hook in supervisord, and
post-start against a local XML-RPC server standing in for oned."""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from xmlrpc.server import SimpleXMLRPCServer

import pytest
from supervisor.options import ServerOptions
from testlib import write_image_versions

from onerun.catalogue import INSTALLED_BY
from onerun.layout import Layout
from onerun.log import Logger
from onerun.marker import read_start_record, write_start_record
from onerun.plan import ApplyContext
from onerun.runtime.critical import CRITICAL_PROGRAMS
from onerun.runtime.pid1 import make_hooks
from onerun.runtime.poststart import heal_service_auth_files, wait_for_oned
from onerun.runtime.services import plan_programs
from onerun.runtime.supervisor import (
    render_config,
    scrubbed_environment,
    supervisor_actions,
    supervisord_argv,
)
from onerun.settings import load_settings


def _programs(root: Path) -> list:
    for rel in INSTALLED_BY.values():
        (root / rel.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / rel.lstrip("/")).write_text("")
    return plan_programs(load_settings({}, root=str(root)), Layout(root), maintenance=False,
                         heal_service_auth=True, record_start=("7.0.0", "7.0.0"))


def _parse(tmp_path: Path, text: str) -> ServerOptions:
    conf = tmp_path / "supervisord.conf"
    conf.write_text(text)
    for directory in ("run/onerun",):  # supervisord checks it exists
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    return options


def test_scrubbed_environment_is_an_allow_list(tmp_path: Path) -> None:
    environ = {"PATH": "/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
               "DB_PASSWORD": "x", "ONEADMIN_PASSWORD": "x", "ONE_KEY": "x",
               "DB_PASSWORD_FILE": "/s", "ONE_KEY_FILE": "/s", "AWS_SECRET": "x",
               "KUBERNETES_SERVICE_HOST": "10.0.0.1", "LC_PASSWORD": "x"}
    scrubbed = scrubbed_environment(environ, Layout(tmp_path))
    assert scrubbed == {"PATH": "/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
                        "ONERUN_ROOT": str(tmp_path)}


@pytest.mark.parametrize("as_root", [True, False])
def test_rendered_config_parses_and_switches_user_only_as_root(tmp_path: Path,
                                                               as_root: bool) -> None:
    programs = _programs(tmp_path)
    text = render_config(Layout(tmp_path), programs, run_as_root=as_root)
    assert ("user=oneadmin" in text) is as_root
    options = _parse(tmp_path, text)
    configs = {g.name: g.process_configs[0] for g in options.process_group_configs}
    assert set(configs) == {p.name for p in programs}
    for program in programs:
        config = configs[program.name]
        assert config.command.split() == program.command  # no spaces in these paths
        assert config.environment == program.environment
        assert config.priority == program.priority
        assert config.stopwaitsecs == program.stopwaitsecs
        assert config.uid == (Layout(tmp_path).oneadmin.uid if as_root else None)
        # No file opened for its output: supervisord passes it to onerun's hook (pid1.py).
        assert config.stdout_logfile is None and config.stderr_logfile is None
        assert config.stdout_events_enabled and config.stderr_events_enabled
        assert config.directory == str(tmp_path / "var/lib/one")
    server = options.configroot.supervisord.server_configs[0]
    assert server["file"] == str(tmp_path / "run/onerun/supervisor.sock")
    assert server["chmod"] == 0o700


def test_percent_and_quotes_are_handled(tmp_path: Path) -> None:
    programs = _programs(tmp_path)
    odd = next(p for p in programs if p.name == "oned")
    with_percent = replace(odd, command=[*odd.command, "100%", "a b"])
    options = _parse(tmp_path, render_config(Layout(tmp_path), [with_percent], run_as_root=False))
    command = options.process_group_configs[0].process_configs[0].command
    assert shlex.split(command) == with_percent.command
    with pytest.raises(Exception, match="cannot pass X"):
        render_config(Layout(tmp_path), [replace(odd, environment={"X": 'a"b'})],
                      run_as_root=False)


def test_actions_create_log_files_and_config(tmp_path: Path) -> None:
    programs = _programs(tmp_path)
    layout = Layout(tmp_path)
    settings = load_settings({}, root=str(tmp_path))
    ctx = ApplyContext(layout, os.getuid(), os.getgid(), lambda _m: None)
    actions = supervisor_actions(settings, layout, programs)
    for action in actions:
        assert action.describe()["action"]
        action.apply(ctx)
    assert (tmp_path / "var/log/one/oned.log").is_file()
    assert (tmp_path / "var/log/one/oneflow.log").is_file()
    assert layout.supervisor_conf.stat().st_mode & 0o777 == 0o644
    assert "PASSWORD" not in layout.supervisor_conf.read_text()
    assert supervisord_argv(layout) == [sys.executable, "-m", "onerun", "supervisord", "-n",
                                        "-c", str(layout.supervisor_conf)]


def test_config_loads_onerun_s_hook_with_the_critical_programs(tmp_path: Path) -> None:
    """supervisord imports the factory while parsing: the hook is what ends the pod."""
    programs = _programs(tmp_path)
    options = _parse(tmp_path, render_config(Layout(tmp_path), programs, run_as_root=False))
    factories = dict((name, (factory, config))
                     for name, factory, config in
                     options.configroot.supervisord.rpcinterface_factories)
    factory, config = factories["onerun"]
    assert factory is make_hooks
    assert set(config["critical"].split()) == set(CRITICAL_PROGRAMS)


@pytest.fixture
def fake_oned() -> Iterator[tuple[str, list[tuple[object, ...]]]]:
    """A local XML-RPC server answering like oned and recording one.user.passwd."""
    calls: list[tuple[object, ...]] = []
    server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
    server.register_function(lambda s, i, d: [True, "<USER/>", 0], "one.user.info")

    def passwd(session: str, uid: int, password: str) -> list[object]:
        calls.append((session, uid, password))
        return [True, uid, 0]

    server.register_function(passwd, "one.user.passwd")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/RPC2", calls
    server.shutdown()


def test_post_start_heals_every_auth_file_of_the_release(tmp_path: Path, fake_oned: tuple) -> None:
    endpoint, calls = fake_oned
    write_image_versions(tmp_path, "7.2.0", "7.0.0")
    layout = Layout(tmp_path)
    layout.dot_one.mkdir(parents=True)
    layout.one_auth.write_text("oneadmin:pw\n")
    log = Logger("text", io.StringIO())
    client = wait_for_oned(layout, log, endpoint=endpoint)
    heal_service_auth_files(client, layout, log)
    assert len(calls) == 1 and calls[0][:2] == ("oneadmin:pw", 1)
    names = ("sunstone_auth", "onegate_auth", "oneflow_auth", "oneform_auth")
    for name in names:
        path = layout.service_auth(name)
        user, secret = path.read_text().rstrip("\n").split(":", 1)
        assert user == "serveradmin"
        assert hashlib.sha256(secret.encode()).hexdigest() == calls[0][2]
        assert path.stat().st_mode & 0o777 == 0o600
    assert not layout.service_auth("oneks_auth").exists()
    assert calls[0][2] not in log.stream.getvalue()  # type: ignore[attr-defined]
    write_start_record(layout.volume_marker, "7.2.0", "7.0.0", os.getuid(), os.getgid())
    assert read_start_record(layout.volume_marker) is not None


def test_wait_for_oned_retries_until_it_answers(tmp_path: Path, fake_oned: tuple) -> None:
    endpoint, _ = fake_oned
    layout = Layout(tmp_path)
    layout.dot_one.mkdir(parents=True)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # one_auth appears after two failed rounds
        sleeps.append(seconds)
        if len(sleeps) == 2:
            layout.one_auth.write_text("oneadmin:pw\n")

    stream = io.StringIO()
    wait_for_oned(layout, Logger("text", stream), sleep=sleep, endpoint=endpoint)
    assert len(sleeps) == 2
    assert stream.getvalue().count("waiting for oned") == 1  # logged once per reason


def _root_with_one_auth(root: Path) -> Layout:
    layout = Layout(root)
    layout.dot_one.mkdir(parents=True)
    layout.one_auth.write_text("oneadmin:pw\n")
    return layout


def _helper(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run an onerun helper as supervisord would; a helper looking in the wrong root waits
    for oned's credentials there until the timeout fails the test."""
    environ = {key: value for key, value in os.environ.items()
               if key not in ("ONE_AUTH", "ONERUN_ROOT")}
    return subprocess.run([sys.executable, "-m", "onerun", *argv], capture_output=True,
                          text=True, env={**environ, **env}, timeout=30, check=False)


@pytest.mark.parametrize("how", ["--root", "ONERUN_ROOT"])
def test_post_start_finds_its_root_by_option_or_environment(
        tmp_path: Path, fake_oned: tuple, how: str) -> None:
    """--root wins over ONERUN_ROOT (what supervisord passes), as for every command."""
    endpoint, _ = fake_oned
    layout = _root_with_one_auth(tmp_path / "chosen")
    decoy = tmp_path / "decoy"  # no one_auth there
    if how == "--root":
        done = _helper({"ONE_XMLRPC": endpoint, "ONERUN_ROOT": str(decoy)}, "post-start",
                       "--root", str(layout.root), "--record-start", "7.0.0", "7.0.0")
    else:
        done = _helper({"ONE_XMLRPC": endpoint, "ONERUN_ROOT": str(layout.root)},
                       "post-start", "--record-start", "7.0.0", "7.0.0")
    assert done.returncode == 0, done.stderr
    record = read_start_record(layout.volume_marker)
    assert record is not None and record.opennebula_version == "7.0.0"


def test_wait_oned_with_root_reads_one_auth_there(tmp_path: Path, fake_oned: tuple) -> None:
    endpoint, _ = fake_oned
    layout = _root_with_one_auth(tmp_path / "chosen")
    done = _helper({"ONE_XMLRPC": endpoint, "ONERUN_ROOT": str(tmp_path / "decoy")},
                   "wait-oned", "--root", str(layout.root), "--",
                   sys.executable, "-c", "print('command ran')")
    assert (done.returncode, done.stdout) == (0, "command ran\n"), done.stderr



def test_log_files_are_never_created_or_opened_through_a_link(tmp_path: Path) -> None:
    """/var/log/one belongs to oneadmin: as root, following a link planted there would
    create, open or chown any file oneadmin names."""
    from onerun.runtime.supervisor import EnsureLogFile

    log_dir = tmp_path / "var/log/one"
    log_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (log_dir / "oned.log").symlink_to(elsewhere / "created-through-the-link")
    (elsewhere / "existing").write_text("kept\n")
    (log_dir / "monitor.log").symlink_to(elsewhere / "existing")
    messages: list[str] = []
    ctx = ApplyContext(Layout(tmp_path), os.getuid(), os.getgid(), messages.append)
    for name in ("oned.log", "monitor.log"):
        EnsureLogFile(log_dir / name).apply(ctx)
    assert not (elsewhere / "created-through-the-link").exists()
    assert (elsewhere / "existing").read_text() == "kept\n"
    assert (log_dir / "oned.log").is_symlink() and (log_dir / "monitor.log").is_symlink()
    assert len(messages) == 2 and all("link" in message for message in messages)


def test_a_fifo_in_place_of_a_log_file_does_not_block_the_start(tmp_path: Path) -> None:
    from onerun.runtime.supervisor import EnsureLogFile

    fifo = tmp_path / "oned.log"
    os.mkfifo(fifo)
    messages: list[str] = []
    ctx = ApplyContext(Layout(tmp_path), os.getuid(), os.getgid(), messages.append)
    worker = threading.Thread(target=EnsureLogFile(fifo).apply, args=(ctx,), daemon=True)
    worker.start()
    worker.join(timeout=5)
    blocked = worker.is_alive()
    if blocked:  # let the blocked open return, so nothing stays behind
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
    assert not blocked
    assert fifo.is_fifo() and messages and "not a regular file" in messages[0]


def test_resident_helpers_import_nothing_heavy(tmp_path: Path) -> None:
    """The log follower stays resident for the pod's life: no click, jinja2, pymysql,
    tenacity, ruamel or settings in it (each costs resident memory, bench/)."""
    (tmp_path / "var/log/one").mkdir(parents=True)
    code = (
        "import signal, sys, threading\nfrom onerun.entry import main\n"
        f"sys.argv = ['onerun', 'logs', '--follow', '--root', {str(tmp_path)!r}]\n"
        "threading.Timer(1.0, signal.raise_signal, (signal.SIGTERM,)).start()\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m in ('onerun.cli', 'onerun.settings') or "
        "m.split('.')[0] in {'click', 'jinja2', 'pymysql', 'tenacity', 'ruamel'})\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.stdout.splitlines()[-1] == "HEAVY []", done.stdout + done.stderr
