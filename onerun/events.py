"""``onerun supervise-events``: supervisord's event listener that ends the pod when a
critical program is gone for good, so Kubernetes restarts it and ``onerun start`` runs
its checks again (a crashed oned leaves its lock: restarting it in place would fail).

Critical programs (oned, ssh-agent, onerun-post-start) have autorestart off; the
listener shuts supervisord down when one goes FATAL (could not start) or EXITED with
an exit code not in its exitcodes. Any other program's FATAL is reported, not fatal.
The listener protocol (READY / header / payload / RESULT) is small enough to speak by
hand. It runs as supervisord's own user, so it may SIGTERM its parent: supervisord then
stops every program in order, as on ``kubectl delete pod``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import BinaryIO, TextIO

import click


def parse_tokens(text: str) -> dict[str, str]:
    """``key:value key:value`` as in supervisord's headers and state-event payloads."""
    pairs = (token.split(":", 1) for token in text.split() if ":" in token)
    return {key: value for key, value in pairs}


def should_shut_down(event: str, payload: dict[str, str], critical: Iterable[str]) -> bool:
    """Whether this event means the pod cannot serve until it is restarted."""
    name = payload.get("processname", "")
    if name not in set(critical):
        return False
    if event == "PROCESS_STATE_FATAL":
        return True
    return event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0"


def describe(event: str, payload: dict[str, str]) -> str:
    name = payload.get("processname", "?")
    if event == "PROCESS_STATE_FATAL":
        return f"{name} could not be started (FATAL)"
    return f"{name} exited unexpectedly (pid {payload.get('pid', '?')})"


def listen(stdin: BinaryIO, stdout: TextIO, stderr: TextIO, critical: Iterable[str],
           shut_down: Callable[[], None]) -> None:
    """Serve events until stdin closes; ``shut_down`` is called at most once."""
    critical = frozenset(critical)
    done = False
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header_line = stdin.readline()
        if not header_line:
            return
        header = parse_tokens(header_line.decode())
        payload = parse_tokens(stdin.read(int(header.get("len", "0"))).decode())
        event = header.get("eventname", "")
        if should_shut_down(event, payload, critical):
            if not done:
                done = True
                print(f"{describe(event, payload)}: critical, stopping supervisord so the pod"
                      " restarts", file=stderr, flush=True)
                shut_down()
        elif event == "PROCESS_STATE_FATAL":
            print(f"{describe(event, payload)}: not critical, the pod stays up",
                  file=stderr, flush=True)
        stdout.write("RESULT 2\nOK")
        stdout.flush()


@click.command("supervise-events")
@click.option("--critical", "critical", multiple=True, metavar="PROGRAM",
              help="A program whose FATAL or unexpected exit ends supervisord (repeatable).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Accepted like every onerun command's; the listener reads no path.")
def supervise_events_command(critical: tuple[str, ...], root: str | None) -> None:
    """supervisord event listener: end supervisord when a critical program is gone."""
    del root  # it only speaks to supervisord over stdin/stdout
    parent = os.getppid()
    listen(sys.stdin.buffer, sys.stdout, sys.stderr, critical,
           lambda: os.kill(parent, signal.SIGTERM))
