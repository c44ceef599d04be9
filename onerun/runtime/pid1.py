"""supervisord as PID 1, with onerun's hooks inside its process: ``onerun supervisord``.

``onerun start`` execs ``python -m onerun supervisord -n -c CONF``: supervisord's own main
loop (supervisor.supervisord.main), in this process, so supervisord is PID 1 and receives
SIGTERM from the container runtime as before. The rendered config names ``make_hooks``
as an rpcinterface factory, supervisord's documented way to load code into its process;
supervisord calls it once its programs are configured and before any is started, and
the hook subscribes to supervisord's in-process events (supervisor/events.py).

What the hooks do, and why in-process rather than in programs of their own
(docs/processes.md):
- Every program's stdout and stderr, line by line, prefixed with its name, straight onto
  supervisord's own stdout, which is the container's (supervisord passes each chunk it
  reads from a program's pipe as a PROCESS_LOG event). A program cannot write to the
  container's stdout itself: supervisord gives it pipes, and re-opening the runtime's
  pipe by path fails for a non-root user. Before, a FIFO and a relay process carried the
  output; a dead relay left the FIFO without a reader and supervisord blocked for good
  in opening it. Now no process stands between a program and stdout, and supervisord
  opens no file on a program's behalf.
- A critical program (onerun.runtime.critical) that goes FATAL or exits unexpectedly sets
  supervisord's mood to SHUTDOWN, exactly what its SIGTERM handler does
  (Supervisor.handle_signal in supervisor/supervisord.py), so every program stops in
  order; once supervisord's main loop returns, this process exits with EXIT_CRITICAL
  and a last line naming the program. supervisord alone always exits 0, which
  ``--restart on-failure`` and Kubernetes take for a completed container.
- No resident listener process: nothing extra to keep in memory or to restart.

Imports supervisor (already loaded in this process) and the stdlib only.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from onerun.log import Logger
from onerun.runtime.logline import format_line, split_lines

# README's exit-code table. 70 is EX_SOFTWARE of sysexits.h; it is none of the start-time
# codes (0-4, 143), below 126-128+n, which shells and container runtimes use for
# "cannot execute", "not found" and "killed by signal n" (e.g. 137, 143).
EXIT_CRITICAL = 70


class _Outcome:
    """What ended supervisord: set once, by the first critical failure."""

    failure: str | None = None


_outcome = _Outcome()


def describe(event: Any) -> str | None:
    """Why a process state event means the pod cannot serve, or None if it does not."""
    from supervisor import events

    name = event.process.config.name
    if isinstance(event, events.ProcessStateFatalEvent):
        return f"{name} could not be started (FATAL)"
    if isinstance(event, events.ProcessStateExitedEvent) and not event.expected:
        status = getattr(event.process, "exitstatus", None)
        return f"{name} exited unexpectedly (exit status {status})"
    return None


class Hooks:
    """Reacts to supervisord's process state events, inside supervisord."""

    def __init__(self, supervisord: Any, critical: frozenset[str], log: Logger,
                 output: OutputRelay) -> None:
        self.supervisord = supervisord
        self.critical = critical
        self.log = log
        self.output = output

    def on_state(self, event: Any) -> None:
        """A program ended: print its last unfinished line. A critical program gone for
        good: stop everything, as SIGTERM would."""
        from supervisor import events
        from supervisor.states import ProcessStates, SupervisorStates

        if event.process.state in (ProcessStates.EXITED, ProcessStates.STOPPED,
                                   ProcessStates.BACKOFF, ProcessStates.FATAL):
            self.output.flush(event.process.config.name)
        options = self.supervisord.options
        reason = describe(event)
        if event.process.config.name not in self.critical:
            if isinstance(event, events.ProcessStateFatalEvent):
                self.log.warning(f"{reason}: not critical, the pod stays up")
            return
        # Once stopping (SIGTERM, or an earlier failure), a stop was asked for already.
        if reason is None or options.mood < SupervisorStates.RUNNING:
            return
        _outcome.failure = reason
        self.log.error(f"{reason}: critical, stopping every program; the container exits "
                       f"with code {EXIT_CRITICAL} so that it is restarted")
        options.mood = SupervisorStates.SHUTDOWN


def write_stdout(data: bytes) -> None:
    """All of ``data`` onto this process's stdout; dropped if stdout is gone (EPIPE)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view):]
    except OSError:
        return


class OutputRelay:
    """Programs' output to stdout, whole lines only, so that lines of different programs
    never mix. ``raw`` programs (the log follower) print ready-made lines, unprefixed."""

    def __init__(self, raw: frozenset[str], fmt: str, write: Any = write_stdout) -> None:
        self.raw = raw
        self.fmt = fmt
        self.write = write
        self.partial: dict[tuple[str, str], bytes] = {}

    def on_output(self, event: Any) -> None:
        name, channel = event.process.config.name, event.channel
        lines, rest = split_lines(self.partial.pop((name, channel), b""), event.data)
        if rest:
            self.partial[(name, channel)] = rest
        self._emit(name, channel, lines)

    def flush(self, name: str) -> None:
        """A program has ended: its unfinished last line, if any, is printed as is."""
        for channel in ("stdout", "stderr"):
            rest = self.partial.pop((name, channel), b"")
            if rest:
                self._emit(name, channel, [rest])

    def _emit(self, name: str, channel: str, lines: list[bytes]) -> None:
        if name in self.raw and channel == "stdout":
            out = b"".join(line + b"\n" for line in lines if line)
        else:
            out = b"".join(format_line(name, channel, line, self.fmt) for line in lines)
        if out:
            self.write(out)


class _NoMethods:
    """The RPC namespace supervisord registers for the factory: it offers nothing."""


def make_hooks(supervisord: Any, **config: str) -> _NoMethods:
    """supervisord's rpcinterface factory (``[rpcinterface:onerun]`` in the config).

    ``critical``, ``raw_output``: space-separated program names. Called again after a
    SIGHUP reload, once supervisord has cleared its subscriptions.
    """
    from supervisor import events

    log = _logger()
    output = OutputRelay(frozenset(config.get("raw_output", "").split()), log.fmt)
    hooks = Hooks(supervisord, frozenset(config.get("critical", "").split()), log, output)
    events.subscribe(events.ProcessLogEvent, _guarded(output.on_output, log))
    events.subscribe(events.ProcessStateEvent, _guarded(hooks.on_state, log))
    return _NoMethods()


def _guarded(callback: Any, log: Logger) -> Any:
    """A hook must never raise into supervisord's main loop."""

    def call(event: Any) -> None:
        try:
            callback(event)
        except Exception as exc:
            log.error(f"onerun's supervisord hook failed: {exc.__class__.__name__}: {exc}")

    return call


def _logger() -> Logger:
    """onerun's line format (ONERUN_LOG_FORMAT reaches supervisord), on its stdout."""
    return Logger(os.environ.get("ONERUN_LOG_FORMAT", "text"), sys.stdout)


def main(argv: list[str]) -> int:
    """Run supervisord with ``argv``; exit 0 after a requested stop, EXIT_CRITICAL after
    a critical program's failure (last line on stdout naming it)."""
    from supervisor import supervisord

    supervisord.main(argv)
    if _outcome.failure is None:
        return 0
    _logger().error(
        f"stopped because a critical program failed: {_outcome.failure}; "
        f"exit code {EXIT_CRITICAL}")
    return EXIT_CRITICAL
