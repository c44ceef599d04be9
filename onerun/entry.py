"""Console entry point. ``onerun probe`` (every few seconds in every pod), ``onerun
supervisord`` (PID 1), ``onerun logs`` (resident for the pod's life), ``onerun raft-hook``
(run by oned at each Raft role change) and ``onerun wait-oned`` (several wait while oned
bootstraps) skip click and every heavy import; everything else goes through
the click CLI (onerun/cli.py)."""

from __future__ import annotations

import sys


def stop_on_signals() -> None:
    """SIGTERM and SIGINT end ``onerun start`` with exit 143, from its first line on.

    As a container's PID 1, onerun gets no default action for a signal it does not handle:
    the kernel drops it, and Kubernetes must SIGKILL the pod after its grace period. Every
    write of the start is atomic, so stopping anywhere leaves the old or the new file; the
    DB wait and the schema upgrade install their own handlers while they run. The exec of
    supervisord resets the handlers: supervisord then owns the signals.
    """
    import signal

    from onerun.errors import Interrupted

    def stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        raise Interrupted(f"stopped by {name} before the hand-off to supervisord; every write"
                          " so far is whole, the next start goes on from here")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["probe"]:
        from onerun.runtime.probe import main as probe_main

        sys.exit(probe_main(argv[1:]))
    if argv[:1] == ["supervisord"]:
        from onerun.runtime.pid1 import main as pid1_main

        sys.exit(pid1_main(argv[1:]))
    if argv[:1] == ["logs"]:
        from onerun.runtime.logs import main as logs_main

        sys.exit(logs_main(argv[1:]))
    if argv[:1] == ["raft-hook"]:
        from onerun.ha.hook import main as hook_main

        sys.exit(hook_main(argv[1:]))
    if argv[:1] == ["wait-oned"]:
        from onerun.runtime.poststart import wait_oned_main

        sys.exit(wait_oned_main(argv[1:]))
    if argv[:1] == ["start"]:
        stop_on_signals()
    from onerun.errors import Interrupted

    try:
        from onerun.cli import main as cli_main

        cli_main()
    except Interrupted as exc:  # arrived before the CLI's own error reporting was in place
        print(f"onerun error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
