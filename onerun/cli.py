"""The click CLI: arguments in, exit codes out. All logic lives in the modules it calls.

This is the only module that imports click, and only onerun/entry.py imports it: the
commands parse their arguments, import the modules they run when they run (``onerun
version`` loads no backup, database or HA code) and call plain functions there, which
raise OnerunError. tests/unit/test_onerun_imports.py holds both rules.

Exit codes (README, "Exit codes"): 0 ok, 1 unexpected error, 2 invalid settings, 3 unsafe
state refused, 4 a dependency (the DB) not available in time. ``reports_errors`` and
``main`` turn errors into exit codes.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from onerun import __version__
from onerun.errors import EXIT_UNEXPECTED, OnerunError
from onerun.layout import Layout
from onerun.log import Logger
from onerun.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

root_option = click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Prefix for every path (tests, demos). Default: $ONERUN_ROOT or /.",
)


def load(root: str | None) -> tuple[Settings, Layout]:
    """Settings from the environment and the layout for ``root``."""
    settings = load_settings(os.environ, root=root)
    return settings, Layout.from_env(settings.root)


def logger_for(settings: Settings | None = None) -> Logger:
    """A logger in the settings' format; before (or without) settings, ONERUN_LOG_FORMAT's."""
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


@cli.command("raft-hook",
             context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def raft_hook(args: tuple[str, ...]) -> None:
    """oned's Raft hook: leader|follower --api URL --namespace NS --pod NAME labels this pod
    with its role (docs/ha.md; the console script runs it without click, onerun/entry.py)."""
    from onerun.ha.hook import main as hook_main

    sys.exit(hook_main(list(args)))


@cli.command("wait-oned",
             context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def wait_oned(args: tuple[str, ...]) -> None:
    """Wait until oned answers (and FILEs exist), then exec COMMAND.

    [--file FILE]... [--root R] -- COMMAND. Listed here for --help; the console script and
    `python -m onerun` run it without loading click (onerun/entry.py): several of these
    wait while oned bootstraps.
    """
    from onerun.runtime.poststart import wait_oned_main

    sys.exit(wait_oned_main(list(args)))


@cli.command("post-start")
@click.option("--heal-service-auth", is_flag=True,
              help="Give serveradmin a new secret and write every service auth file.")
@click.option("--record-key-fingerprint", "record_fingerprint", is_flag=True,
              help="Record one_key's fingerprint in oneadmin's template.")
@click.option("--record-start", nargs=2, default=None, metavar="RELEASE DB_VERSION",
              help="Record the completed start on the volume (empty string: unknown).")
@root_option
def post_start(heal_service_auth: bool, record_fingerprint: bool,
               record_start: tuple[str, str] | None, root: str | None) -> None:
    """Once oned answers: heal service auth files, record one_key's fingerprint, record the
    start on the volume."""
    from onerun.runtime.poststart import post_start as run_post_start

    run_post_start(Layout.from_env(root), logger_for(), heal_service_auth=heal_service_auth,
                   record_fingerprint=record_fingerprint, record_start=record_start)


@cli.command("ssh-add")
@root_option
def ssh_add(root: str | None) -> None:
    """Load oneadmin's keys into the agent supervisord runs (oned's drivers forward it)."""
    from onerun.sshkeys import load_agent_keys

    sys.exit(load_agent_keys(Layout.from_env(root), logger_for()))


@cli.command("zone-serve")
@click.option("--listen", required=True, metavar="HOST:PORT")
@click.option("--name", required=True, help="This member's server name in the zone.")
@click.option("--endpoint", required=True, help="This member's oned endpoint for its peers.")
@click.option("--oned", required=True, help="This member's oned endpoint, from inside.")
@root_option
def zone_serve(listen: str, name: str, endpoint: str, oned: str, root: str | None) -> None:
    """Answer the other members of the zone (run by supervisord in an HA zone)."""
    from onerun.ha.start import serve_zone

    serve_zone(Layout.from_env(root), logger_for(), listen=listen, name=name,
               endpoint=endpoint, oned=oned)


@cli.command("backup")
@click.option("--list", "list_only", is_flag=True,
              help="List onerun's backups (kind, date, size) instead of making one.")
@root_option
@reports_errors
def backup(list_only: bool, root: str | None) -> None:
    """Back up the database now into /var/lib/one/backups (safe while oned runs)."""
    from onerun.backup import backup_listing, backup_now

    settings, layout = load(root)
    if list_only:
        for line in backup_listing(settings, layout):
            click.echo(line)
        return
    click.echo(str(backup_now(settings, layout, logger_for(settings).info)))


@cli.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@root_option
@reports_errors
def restore(file: Path, root: str | None) -> None:
    """Put one of onerun's backups back. oned must be stopped (ONERUN_MAINTENANCE=1)."""
    from onerun.backup import restore_stopped

    settings, layout = load(root)
    path = file if file.is_absolute() else Path.cwd() / file
    restore_stopped(settings, layout, path, logger_for(settings).info)


def main() -> None:
    """Run the CLI; what a command did not report itself ends here with its exit code."""
    try:
        cli(standalone_mode=True)
    except OnerunError as exc:  # from the helpers supervisord runs (post-start, zone-serve)
        logger_for().error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:
        logger_for().error(f"unexpected error: {exc.__class__.__name__}: {exc}")
        sys.exit(EXIT_UNEXPECTED)
