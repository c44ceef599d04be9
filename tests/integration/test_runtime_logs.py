"""The log follower on real files: prefixes, files that appear later, truncation,
rotation, the size bound, resuming from the recorded state, and the CLI process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onerun.plan import ApplyContext
from onerun.runtime.logs import Follower, read_state
from onerun.runtime.supervisor import MarkLogsShown


def _follower(log_dir: Path, max_bytes: int = 1 << 20, fmt: str = "text") -> tuple[Follower,
                                                                                   io.BytesIO]:
    out = io.BytesIO()
    return Follower(log_dir, out, max_bytes, fmt), out


def _lines(out: io.BytesIO) -> list[str]:
    return out.getvalue().decode().splitlines()


def _append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_prefixes_lines_and_follows_files_that_appear_later(tmp_path: Path) -> None:
    _append(tmp_path / "oned.log", "first oned line\n")
    follower, out = _follower(tmp_path)
    follower.poll()
    _append(tmp_path / "monitor.log", "monitord line\n")
    _append(tmp_path / "oneflow.log", "flow line\npartial")
    _append(tmp_path / "unrelated.txt", "not followed\n")
    follower.poll()
    assert _lines(out) == ["[oned] first oned line", "[monitord] monitord line",
                           "[oneflow] flow line"]
    _append(tmp_path / "oneflow.log", " finished\n")
    follower.poll()
    assert _lines(out)[-1] == "[oneflow] partial finished"


def test_what_is_not_a_readable_regular_file_is_skipped_not_fatal(tmp_path: Path) -> None:
    """oneadmin may put a FIFO, a link to a file it cannot read, or a directory where a
    log file belongs: the follower goes on with the others."""
    os.mkfifo(tmp_path / "oned.log")
    (tmp_path / "monitor.log").symlink_to(tmp_path / "nowhere" / "monitor.log")
    (tmp_path / "sched.log").mkdir()
    _append(tmp_path / "oneflow.log", "flow line\n")
    follower, out = _follower(tmp_path)
    follower.poll()
    assert _lines(out) == ["[oneflow] flow line"]


def test_json_format_names_service_and_file(tmp_path: Path) -> None:
    _append(tmp_path / "fireedge.error", "boom\n")
    follower, out = _follower(tmp_path, fmt="json")
    follower.poll()
    assert json.loads(_lines(out)[0]) == {"service": "fireedge", "file": "fireedge.error",
                                          "msg": "boom"}


def test_survives_truncation_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "oned.log"
    _append(log, "before truncation, a long line\n")
    follower, out = _follower(tmp_path)
    follower.poll()
    log.write_text("")  # truncated by someone else (oned 7.0 does at its start)
    _append(log, "after\n")
    follower.poll()
    log.rename(tmp_path / "oned.log.1")
    _append(tmp_path / "oned.log.1", "tail of the old file\n")
    _append(log, "in the new file\n")
    follower.poll()
    assert _lines(out) == ["[oned] before truncation, a long line", "[oned] after",
                           "[oned] tail of the old file", "[oned] in the new file"]


def test_bounds_a_file_past_the_limit_after_printing_it(tmp_path: Path) -> None:
    log = tmp_path / "oneflow.log"
    follower, out = _follower(tmp_path, max_bytes=1000)
    follower.poll()
    with log.open("a") as writer:  # a writer that keeps its O_APPEND handle open
        for number in range(50):
            writer.write(f"line {number:03d} of the flow log\n")
        writer.flush()
        follower.poll()
        assert log.stat().st_size == 0
        writer.write("written after the truncation\n")
        writer.flush()
        follower.poll()
    assert log.stat().st_size == len("written after the truncation\n")  # no hole of zeros
    lines = _lines(out)
    assert lines[:50] == [f"[oneflow] line {n:03d} of the flow log" for n in range(50)]
    assert lines[50:] == ["[oneflow] written after the truncation"]


def test_unfollowed_files_are_bounded_too(tmp_path: Path) -> None:
    vm_log = tmp_path / "42.log"
    vm_log.write_text("x" * 2000)
    follower, out = _follower(tmp_path, max_bytes=1000)
    follower.poll()
    assert vm_log.stat().st_size == 0 and out.getvalue() == b""


def test_old_lines_are_not_printed_again_and_new_ones_are_not_missed(tmp_path: Path) -> None:
    log = tmp_path / "oned.log"
    _append(log, "from the previous run\n")
    MarkLogsShown(tmp_path).apply(ApplyContext(None, os.getuid(), os.getgid(), print))  # type: ignore[arg-type]
    _append(log, "written before the follower started\n")
    follower, out = _follower(tmp_path)
    follower.poll()
    assert _lines(out) == ["[oned] written before the follower started"]
    # A restarted follower resumes where the last one stopped.
    _append(log, "while the follower was down\n")
    assert read_state(tmp_path)[str(log)][1] < log.stat().st_size
    again, out2 = _follower(tmp_path)
    again.poll()
    assert _lines(out2) == ["[oned] while the follower was down"]


@pytest.mark.parametrize("how", ["ONERUN_ROOT", "--root"])
def test_cli_follower_prints_and_stops_on_sigterm(tmp_path: Path, how: str) -> None:
    """The root as supervisord passes it (ONERUN_ROOT), or --root, which wins over it."""
    root = tmp_path / "root"
    log_dir = root / "var/log/one"
    log_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "onerun", "logs", "--follow"]
    if how == "--root":
        env = {**os.environ, "ONERUN_ROOT": str(tmp_path / "decoy")}
        argv += ["--root", str(root)]
    else:
        env = {**os.environ, "ONERUN_ROOT": str(root)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        _append(log_dir / "onegate.log", "gate says hi\n")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "[onegate] gate says hi" in output.splitlines()
