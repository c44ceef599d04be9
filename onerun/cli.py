"""The click CLI: arguments in, exit codes out. All logic lives in the modules it calls.

Exit codes (README): 0 ok, 1 unexpected error, 2 invalid settings, 3 unsafe state
refused, 4 a dependency (the DB) not available in time. Only ``main`` turns errors
into exit codes.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from onerun import __version__
from onerun.cliopts import root_option
from onerun.errors import EXIT_UNEXPECTED, OnerunError
from onerun.layout import Layout
from onerun.log import Logger
from onerun.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def load(root: str | None) -> tuple[Settings, Layout]:
    """Settings from the environment and the layout for ``root``."""
    settings = load_settings(os.environ, root=root)
    return settings, Layout.from_env(settings.root)


def logger_for(settings: Settings | None = None) -> Logger:
    fmt = settings.log_format if settings else os.environ.get("ONERUN_LOG_FORMAT", "text")
    return Logger(fmt)


def reports_errors(func: F) -> F:
    """Print an OnerunError as one clear message and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OnerunError as exc:
            logger_for().error(str(exc))
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run the OpenNebula front-end in a container."""


@cli.command()
def version() -> None:
    """Print onerun's version."""
    click.echo(f"onerun {__version__}")


@cli.command()
@root_option
@reports_errors
def render(root: str | None) -> None:
    """Validate settings and write the rendered configs into /etc/one (nothing else)."""
    from onerun.config.render import render_configs
    from onerun.plan import ApplyContext, Plan

    settings, layout = load(root)
    log = logger_for(settings)
    plan = Plan(actions=list(render_configs(settings, layout)))
    account = layout.oneadmin
    plan.apply(ApplyContext(layout, account.uid, account.gid, lambda _message: None))
    for step in plan.describe():
        if step["action"] == "write":
            log.info(f"wrote {step['path']} ({step['mode']}, {step['content']})")


@cli.command()
@root_option
@click.option("--dry-run", is_flag=True, help="Show the plan and its exit code; change nothing.")
@reports_errors
def start(root: str | None, dry_run: bool) -> None:
    """Prepare the container and hand over to supervisord."""
    from onerun.start import run_start

    settings, layout = load(root)
    sys.exit(run_start(settings, layout, logger_for(settings), dry_run=dry_run))


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def probe(args: tuple[str, ...]) -> None:
    """Kubernetes probes: startup|readiness|liveness [--timeout S] [--root R] [--grace S].

    Listed here for --help; the console script and `python -m onerun` run it without
    loading click at all (onerun/entry.py), since it runs every few seconds.
    """
    from onerun.runtime.probe import main as probe_main

    sys.exit(probe_main(list(args)))


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def supervisord(args: tuple[str, ...]) -> None:
    """supervisord as PID 1 with onerun's hooks (what `start` execs): supervisord's options.

    Listed here for --help; the console script and `python -m onerun` run it without
    loading click (onerun/entry.py), so that PID 1 carries no CLI.
    """
    from onerun.runtime.pid1 import main as pid1_main

    sys.exit(pid1_main(list(args)))


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def logs(args: tuple[str, ...]) -> None:
    """Print OpenNebula's log files on stdout, prefixed: --follow [--root R] (supervisord
    runs it; the console script runs it without click, onerun/entry.py)."""
    from onerun.runtime.logs import main as logs_main

    sys.exit(logs_main(list(args)))


# Commands of other modules are registered below, one import and one add_command each.
from onerun.backup import backup_command, restore_command  # noqa: E402

cli.add_command(backup_command)
cli.add_command(restore_command)
from onerun.ha.start import zone_serve_command  # noqa: E402
from onerun.runtime.poststart import post_start_command, wait_oned_command  # noqa: E402
from onerun.sshkeys import ssh_add_command  # noqa: E402

cli.add_command(wait_oned_command)
cli.add_command(post_start_command)
cli.add_command(ssh_add_command)
cli.add_command(zone_serve_command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except OnerunError as exc:  # pragma: no cover - commands report their own errors
        logger_for().error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:
        logger_for().error(f"unexpected error: {exc.__class__.__name__}: {exc}")
        sys.exit(EXIT_UNEXPECTED)
