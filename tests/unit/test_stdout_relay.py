"""The stdout relay: what is written into the FIFO reaches the stdout the relay inherited,
across writers that come and go, and the relay ends once its parent is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from onerun.errors import OnerunError
from onerun.stdout_relay import make_fifo, start_stdout_relay

# A parent like `onerun start`: starts the relay, then (standing in for supervisord)
# opens the FIFO twice, as supervisord does when the follower restarts, and exits.
PARENT = """
import os, sys, time
from pathlib import Path
from onerun.stdout_relay import start_stdout_relay
fifo = Path(sys.argv[1])
start_stdout_relay(fifo, {"PATH": os.environ["PATH"]})
for n in range(2):
    with open(fifo, "w") as writer:
        writer.write(f"line {n} from a writer\\n")
    time.sleep(0.2)
"""


def test_relay_copies_the_fifo_to_the_inherited_stdout_then_ends(tmp_path: Path) -> None:
    fifo = tmp_path / "stdout.fifo"
    begin = time.monotonic()
    result = subprocess.run([sys.executable, "-c", PARENT, str(fifo)], capture_output=True,
                            text=True, timeout=30, check=True)
    # communicate() returns only when every holder of the pipe (the relay too) has closed it.
    assert result.stdout.splitlines() == ["line 0 from a writer", "line 1 from a writer"]
    assert time.monotonic() - begin < 10


def test_make_fifo_replaces_a_leftover_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "stdout.fifo"
    path.write_text("left by something else")
    make_fifo(path)
    assert path.is_fifo()
    make_fifo(path)  # idempotent
    assert path.is_fifo()


def test_a_relay_that_cannot_start_stops_the_start(tmp_path: Path) -> None:
    """supervisord would block for good opening a FIFO nobody reads: fail before the exec."""
    fifo = tmp_path / "stdout.fifo"
    broken = {"PATH": "/nonexistent", "PYTHONPATH": str(tmp_path / "nothing"),
              "PYTHONHOME": str(tmp_path / "no-python-home")}  # the interpreter cannot start
    with pytest.raises(OnerunError, match="did not start"):
        start_stdout_relay(fifo, broken)
