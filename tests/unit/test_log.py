"""onerun's log lines: text for people, one JSON object per line for collectors."""

from __future__ import annotations

import io
import json
import time

import pytest

from onerun.log import Logger


def test_text_lines() -> None:
    stream = io.StringIO()
    log = Logger("text", stream)
    log.info("starting", services=3)
    log.warning("stale lock removed")
    log.error("refusing", code=3, path="/var/lib/one")
    assert stream.getvalue().splitlines() == [
        "onerun info: starting services=3",
        "onerun warning: stale lock removed",
        "onerun error: refusing code=3 path=/var/lib/one",
    ]


def test_json_lines() -> None:
    stream = io.StringIO()
    log = Logger("json", stream)
    before = time.time()
    log.info("database ready", backend="sqlite", wait=0.5)
    log.error("refusing", path=object())  # not JSON-serialisable: written as its str()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.pop("ts") == pytest.approx(before, abs=5)
    assert first == {"level": "info", "logger": "onerun", "msg": "database ready",
                     "backend": "sqlite", "wait": 0.5}
    assert second["level"] == "error"
    assert second["path"].startswith("<object object")


def test_messages_with_newlines_stay_one_json_line() -> None:
    stream = io.StringIO()
    Logger("json", stream).warning("line one\nline two")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"] == "line one\nline two"


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    Logger().info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "onerun info: to stderr\n"
