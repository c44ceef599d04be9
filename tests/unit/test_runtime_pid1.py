"""onerun's output hook inside supervisord: programs' output chunks (as supervisord reads
them from the pipes) become whole, prefixed lines on stdout. The hook's behaviour with a
real supervisord is in tests/integration/test_runtime_supervisor_real.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

from onerun.runtime.pid1 import OutputRelay


def _chunk(name: str, channel: str, data: bytes) -> SimpleNamespace:
    """What a PROCESS_LOG event carries: the process (its config's name), channel, data."""
    process = SimpleNamespace(config=SimpleNamespace(name=name))
    return SimpleNamespace(process=process, channel=channel, data=data)


def test_chunks_become_whole_prefixed_lines_that_never_mix() -> None:
    written: list[bytes] = []
    relay = OutputRelay(frozenset({"onerun-logs"}), "text", written.append)
    relay.on_output(_chunk("oned", "stdout", b"first li"))
    relay.on_output(_chunk("fireedge", "stderr", b"boom\nhalf"))
    relay.on_output(_chunk("oned", "stdout", b"ne\r\n\nsecond\n"))
    relay.on_output(_chunk("onerun-logs", "stdout", b"[oned] from oned.log\n[sched"))
    relay.on_output(_chunk("onerun-logs", "stdout", b"] from sched.log\n"))
    relay.on_output(_chunk("onerun-logs", "stderr", b"follower trouble\n"))
    relay.flush("fireedge")
    assert b"".join(written).decode().splitlines() == [
        "[fireedge] boom",
        "[oned] first line",
        "[oned] second",
        "[oned] from oned.log",
        "[sched] from sched.log",
        "[onerun-logs] follower trouble",
        "[fireedge] half",
    ]


def test_json_lines_name_service_and_stream() -> None:
    written: list[bytes] = []
    relay = OutputRelay(frozenset(), "json", written.append)
    relay.on_output(_chunk("hem", "stderr", b"no hooks\x00 loaded\n"))
    assert json.loads(b"".join(written)) == {"service": "hem", "file": "stderr",
                                             "msg": "no hooks loaded"}
