"""Whether oned may be running: its lock file, and the layout's oned binary among the
processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from onerun.layout import Layout
from onerun.processes import oned_running


def test_oned_running_reads_the_lock(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert oned_running(layout) is None  # no lock: stopped
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")  # oned's real lock is empty; no oned runs: stale
    assert oned_running(layout) is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        layout.lock_file.write_text(f"{sleeper.pid}\n")
        assert oned_running(layout) == f"{layout.lock_file} is held by running process " \
                                       f"{sleeper.pid}"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert oned_running(layout) is None  # that pid is gone


def test_oned_running_finds_the_layouts_oned_binary(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    oned = layout.binary("/usr/bin/oned")
    oned.parent.mkdir(parents=True)
    oned.write_text("# stand-in for oned: only sleeps\nimport time\ntime.sleep(30)\n")
    layout.lock_dir.mkdir(parents=True)
    layout.lock_file.write_text("")
    process = subprocess.Popen([sys.executable, str(oned)])
    try:
        reason = oned_running(layout)
        assert reason is not None and str(process.pid) in reason
    finally:
        process.kill()
        process.wait()
    assert os.path.exists(layout.lock_file)  # only looked at, never removed
