"""post-start records one_key's fingerprint in oneadmin's template, through oned's API.

A local XML-RPC server stands in for oned: it keeps user 0's body and merges templates as
one.user.update does (update type 1), so what onerun sends is what a later start reads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from xmlrpc.server import SimpleXMLRPCServer

import pytest

from onerun.layout import Layout
from onerun.marker import read_start_record
from onerun.onekey import fingerprint

KEY = "4b1acccde94e4e8e26e250a21b2d44e99e99eafa960a6933b00199b11f8c952e"
USER0 = "<USER><ID>0</ID><NAME>oneadmin</NAME><TEMPLATE>{}</TEMPLATE></USER>"


class FakeOned:
    def __init__(self) -> None:
        self.template = ""
        self.updates: list[tuple[int, str, int]] = []
        self.fail_updates = False
        self.server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
        self.server.register_function(self.info, "one.user.info")
        self.server.register_function(self.update, "one.user.update")
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"

    def info(self, session: str, uid: int, decrypt: bool = False) -> list[object]:
        return [True, USER0.format(self.template), 0]

    def update(self, session: str, uid: int, template: str, merge: int) -> list[object]:
        self.updates.append((uid, template, merge))
        if self.fail_updates:
            return [False, "[one.user.update] Not authorized", 0x200]
        name, value = re.fullmatch(r'(\w+)="([^"]*)"', template).groups()  # type: ignore[union-attr]
        self.template += f"<{name}><![CDATA[{value}]]></{name}>"
        return [True, uid, 0]


@pytest.fixture
def oned() -> Iterator[FakeOned]:
    fake = FakeOned()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()


def _root(tmp_path: Path, key: str | None = KEY) -> Layout:
    layout = Layout(tmp_path)
    layout.dot_one.mkdir(parents=True)
    layout.one_auth.write_text("oneadmin:pw\n")
    if key is not None:
        layout.one_key.write_text(f"{key}\n")
    return layout


def _post_start(layout: Layout, oned: FakeOned, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("ONE_AUTH", "ONERUN_ROOT")}
    return subprocess.run(
        [sys.executable, "-m", "onerun", "post-start", "--root", str(layout.root), *extra],
        env={**env, "ONE_XMLRPC": oned.endpoint}, capture_output=True, text=True, timeout=30,
        check=False)


def test_records_the_fingerprint_once_and_never_the_key(tmp_path: Path, oned: FakeOned) -> None:
    layout = _root(tmp_path)
    done = _post_start(layout, oned, "--record-key-fingerprint", "--record-start", "7.0.2", "")
    assert done.returncode == 0, done.stderr
    assert oned.updates == [(0, f'ONERUN_ONE_KEY_FINGERPRINT="{fingerprint(KEY)}"', 1)]
    assert "recorded one_key's fingerprint" in done.stderr
    assert KEY not in done.stderr + done.stdout
    assert read_start_record(layout.volume_marker) is not None
    again = _post_start(layout, oned, "--record-key-fingerprint")
    assert again.returncode == 0 and len(oned.updates) == 1  # already there: nothing sent


def test_a_different_recorded_fingerprint_is_left_alone(tmp_path: Path, oned: FakeOned) -> None:
    layout = _root(tmp_path)
    other = "0" * 64
    oned.template = f"<ONERUN_ONE_KEY_FINGERPRINT><![CDATA[{other}]]></ONERUN_ONE_KEY_FINGERPRINT>"
    done = _post_start(layout, oned, "--record-key-fingerprint")
    assert done.returncode == 0 and oned.updates == []
    assert "does not match" in done.stderr


@pytest.mark.parametrize("key", [None, "", "short"])
def test_no_full_key_on_the_volume_records_nothing(tmp_path: Path, oned: FakeOned,
                                                   key: str | None) -> None:
    layout = _root(tmp_path, key)
    done = _post_start(layout, oned, "--record-key-fingerprint")
    assert done.returncode == 0 and oned.updates == []
    assert "not recorded" in done.stderr


def test_a_refused_update_does_not_fail_the_start(tmp_path: Path, oned: FakeOned) -> None:
    """post-start is critical (its FATAL stops the pod): a missing fingerprint is not worth
    that, the next start records it; the start record is still written."""
    layout = _root(tmp_path)
    oned.fail_updates = True
    done = _post_start(layout, oned, "--record-key-fingerprint", "--record-start", "7.0.2", "")
    assert done.returncode == 0, done.stderr
    assert "not recorded" in done.stderr and "Not authorized" in done.stderr
    assert read_start_record(layout.volume_marker) is not None


def test_without_the_flag_nothing_is_recorded(tmp_path: Path, oned: FakeOned) -> None:
    assert _post_start(_root(tmp_path), oned).returncode == 0
    assert oned.updates == []


def _helper_env(oned: FakeOned) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("ONE_AUTH", "ONERUN_ROOT")}
    return {**env, "ONE_XMLRPC": oned.endpoint}


def test_wait_oned_execs_the_command_once_oned_answers(tmp_path: Path, oned: FakeOned) -> None:
    """What supervisord runs for the services that need oned: wait, then become COMMAND."""
    layout = _root(tmp_path)
    auth = tmp_path / "oneflow_auth"
    auth.write_text("serveradmin:secret\n")
    done = subprocess.run(
        [sys.executable, "-m", "onerun", "wait-oned", "--file", str(auth),
         f"--root={layout.root}", "--", sys.executable, "-c",
         "import os, sys; print('ran', sys.argv[1:], os.getpid())", "--root", "its own"],
        env=_helper_env(oned), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert f"oned answers at {oned.endpoint}" in done.stderr
    assert done.stdout.startswith("ran ['--root', 'its own'] ")  # its options are its own


@pytest.mark.parametrize(("args", "message"), [
    ([], "no COMMAND to run once oned answers"),
    (["--file"], "--file needs a value"),
    (["--root", "/r", "--"], "no COMMAND to run once oned answers"),
])
def test_wait_oned_without_a_command_exits_2(tmp_path: Path, args: list[str],
                                             message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "onerun", "wait-oned", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert "usage: onerun wait-oned" in done.stderr


def test_wait_oned_loads_no_click(tmp_path: Path, oned: FakeOned) -> None:
    """Several wait-oned processes wait while oned bootstraps: none of them carries the CLI.
    os.execvp is replaced here (in the child) to see what was loaded just before the exec."""
    layout = _root(tmp_path)
    code = (
        "import os, sys\nfrom onerun.entry import main\n"
        "def execvp(file, args):\n"
        "    heavy = sorted(m for m in sys.modules if m == 'onerun.cli' or m.split('.')[0] in "
        "{'click', 'jinja2', 'pymysql', 'tenacity', 'ruamel'})\n"
        "    print('EXEC', args, 'HEAVY', heavy)\n"
        "    sys.exit(0)\n"
        "os.execvp = execvp\n"
        f"sys.argv = ['onerun', 'wait-oned', '--root', {str(layout.root)!r}, '--', 'true']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_helper_env(oned),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.splitlines()[-1] == "EXEC ['true'] HEAVY []", done.stdout + done.stderr
