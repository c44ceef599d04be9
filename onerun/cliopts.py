"""Options every onerun command shares (here, not in cli.py, so that the modules defining
commands need not import the CLI group)."""

from __future__ import annotations

import click

root_option = click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Prefix for every path (tests, demos). Default: $ONERUN_ROOT or /.",
)
