"""Wait until MariaDB accepts DB_USER's login, because oned does not retry.

oned opens its connections once at start and exits when the server does not answer
("Could not open connect to database server", src/sql/MySqlDB.cc in OpenNebula/one).

Each attempt is a real authenticated connection and ``SELECT 1`` with a short timeout,
run in a daemon thread so that the main thread stays responsive to SIGTERM/SIGINT even
while a DNS lookup or a connect hangs: Kubernetes must be able to stop the pod at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import pymysql
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from onerun.database.mysql import (
    ACCESS_DENIED,
    UNKNOWN_DATABASE,
    access_denied,
    describe,
    endpoint,
    error_code,
    mysql_connect,
)
from onerun.errors import DependencyUnavailable, Interrupted
from onerun.settings import Settings

ATTEMPT_TIMEOUT = 1.0  # connect timeout of one attempt: bounds how stale a reason can be
DENIED_GRACE = 5.0  # a server still starting up can briefly deny a valid login
_BACKOFF = wait_exponential(multiplier=0.1, min=0.1, max=2.0)
_POLL = 0.05


class _NotReady(Exception):
    """One failed attempt; tenacity retries only this."""

    def __init__(self, reason: str, error: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While waiting, SIGTERM/SIGINT raise Interrupted; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can own signal handlers; the caller owns them then
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        raise Interrupted(f"stopped by {name} while waiting for the database")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _try_once(settings: Settings, timeout: float) -> BaseException | None:
    """One login and ``SELECT 1`` in a daemon thread; the error, or None when it worked."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            connection = mysql_connect(settings, timeout=timeout, read_timeout=2 * timeout)
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchall()
            finally:
                connection.close()
        except BaseException as error:  # handed to the main thread, which decides
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, name="onerun-db-wait", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(_POLL)  # short slices: a signal handler runs between them
    return outcome[0] if outcome else RuntimeError("database attempt ended without a result")


def wait_for_mysql(settings: Settings, log: Callable[[str], None]) -> None:
    """Return once DB_USER can log in (or DB_NAME is merely missing).

    Raises SettingsError when access stays denied past a short grace, DependencyUnavailable
    at the ONERUN_DB_WAIT_TIMEOUT deadline, Interrupted on SIGTERM/SIGINT.
    """
    with _signals_interrupt():
        _wait(settings, log)


def _wait(settings: Settings, log: Callable[[str], None]) -> None:
    timeout = settings.db_wait_timeout
    started = time.monotonic()
    deadline = started + timeout
    grace = min(DENIED_GRACE, timeout)
    where = endpoint(settings)
    last_reason: str | None = None
    denied_since: float | None = None

    def attempt() -> None:
        nonlocal last_reason, denied_since
        remaining = deadline - time.monotonic()
        error = _try_once(settings, max(0.1, min(ATTEMPT_TIMEOUT, remaining)))
        if error is None:
            return
        if not isinstance(error, (pymysql.err.MySQLError, OSError)):
            raise error  # a bug, not a database that is still coming up
        code = error_code(error)
        if code == UNKNOWN_DATABASE:
            log(f"database {settings.db_name} does not exist yet on {where} (oned creates it)")
            return
        if code in ACCESS_DENIED:
            now = time.monotonic()
            denied_since = now if denied_since is None else denied_since
            if now - denied_since >= grace:
                raise access_denied(error, settings)
        else:
            denied_since = None
        reason = describe(error, settings)
        if reason != last_reason:
            log(f"waiting for the database at {where}: {reason}"
                f" (retrying for up to {timeout:g}s in all)")
            last_reason = reason
        raise _NotReady(reason, error)

    def pause(state: RetryCallState) -> float:
        """Exponential backoff, never sleeping past the deadline."""
        return max(0.0, min(_BACKOFF(state), deadline - time.monotonic()))

    retrying = Retrying(
        retry=retry_if_exception_type(_NotReady),
        stop=lambda _state: time.monotonic() >= deadline,
        wait=pause,
        reraise=True,
    )
    try:
        retrying(attempt)
    except _NotReady as last:
        if error_code(last.error) in ACCESS_DENIED:
            raise access_denied(last.error, settings) from None
        raise DependencyUnavailable(
            f"the database at {where} did not accept DB_USER {settings.db_user!r} within"
            f" ONERUN_DB_WAIT_TIMEOUT={timeout:g}s; last error: {last.reason}"
        ) from None
    log(f"database at {where} accepts logins ({time.monotonic() - started:.1f}s)")
