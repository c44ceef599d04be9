"""Console entry point. ``onerun probe`` (every few seconds in every pod), ``onerun
supervisord`` (PID 1) and ``onerun logs`` (resident for the pod's life) skip click and
every heavy import; everything else goes through the click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["probe"]:
        from onerun.probe import main as probe_main

        sys.exit(probe_main(argv[1:]))
    if argv[:1] == ["supervisord"]:
        from onerun.pid1 import main as pid1_main

        sys.exit(pid1_main(argv[1:]))
    if argv[:1] == ["logs"]:
        from onerun.logs import main as logs_main

        sys.exit(logs_main(argv[1:]))
    from onerun.cli import main as cli_main

    cli_main()
