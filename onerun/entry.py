"""Console entry point. ``onerun probe`` skips click and every heavy import (it runs every
few seconds in every pod); everything else goes through the click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["probe"]:
        from onerun.probe import main as probe_main

        sys.exit(probe_main(argv[1:]))
    from onerun.cli import main as cli_main

    cli_main()
