"""``onerun probe startup|readiness|liveness``: Kubernetes probes at the cost of one stdlib call.

The probe runs every few seconds in every pod, so this module imports only what the chosen probe
needs (entry.py reaches it without click) and starts no child process except with ``--via cli``.
Every probe answers within its own deadline (default 0.8 s, under Kubernetes' default 1 s exec
timeout, whose expiry leaves the probe's children behind as zombies) and prints one line saying why.
Exit 0: healthy; 1: not healthy, or unable to tell (Kubernetes treats both alike).
"""

from __future__ import annotations

import os
import sys
import time

from onerun.layout import Layout

TYPE_CHECKING = False  # typing and collections.abc only for annotations (import cost)
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

KINDS = ("startup", "readiness", "liveness")
DEFAULT_TIMEOUT = 0.8
DEFAULT_GRACE = 60.0
# Liveness: oned RUNNING whose API has answered nothing for this long is wedged
# (docs/probes.md). Long on purpose: a busy oned must never get the pod restarted.
DEFAULT_API_THRESHOLD = 600.0
# After an answer, the next liveness runs within this many seconds skip the API call.
API_RECHECK = 60.0
LIVENESS_STATE = "liveness.json"  # under /run/onerun: when oned's API last answered
USAGE = (
    "usage: onerun probe startup|readiness|liveness [--timeout S] [--root R] [--grace S]"
    " [--api-threshold S] [--via cli]"
)
# Raft STATE values of one.zone.raftstatus (include/RaftManager.h in OpenNebula/one).
RAFT_STATES = {"0": "solo", "1": "candidate", "2": "follower", "3": "leader"}
RAFT_CANDIDATE = "1"
AUTHENTICATION_ERROR = 0x100
# Leave this much of the deadline for reporting after a socket or child timeout.
_MARGIN = 0.05
_DETAIL_LIMIT = 160

Outcome = tuple[bool, str]


class UsageError(Exception):
    """Bad probe arguments: reported like any other failure, in one line."""


class Options:
    """What the command line asked for."""

    __slots__ = ("api_threshold", "grace", "kind", "root", "timeout", "via_cli")

    def __init__(self, kind: str, timeout: float, root: str | None, grace: float,
                 via_cli: bool, *, api_threshold: float = DEFAULT_API_THRESHOLD) -> None:
        self.kind = kind
        self.timeout = timeout
        self.root = root
        self.grace = grace
        self.via_cli = via_cli
        self.api_threshold = api_threshold


def parse_args(argv: list[str]) -> Options:
    """Parse by hand: argparse alone would cost a third of a minimal XML-RPC client's CPU."""
    kind: str | None = None
    values: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if name in ("--timeout", "--root", "--grace", "--via", "--api-threshold"):
            if eq:
                values[name] = inline
            elif args:
                values[name] = args.pop(0)
            else:
                raise UsageError(f"{name} needs a value")
        elif arg in ("-h", "--help"):
            raise UsageError("help requested")
        elif arg in KINDS and kind is None:
            kind = arg
        else:
            raise UsageError(f"unexpected argument {arg!r}")
    if kind is None:
        raise UsageError("say which probe: startup, readiness or liveness")
    via = values.get("--via")
    if via not in (None, "cli"):
        raise UsageError(f"--via accepts only 'cli', not {via!r}")
    return Options(kind, _seconds(values, "--timeout", DEFAULT_TIMEOUT), values.get("--root"),
                   _seconds(values, "--grace", DEFAULT_GRACE), via == "cli",
                   api_threshold=_seconds(values, "--api-threshold", DEFAULT_API_THRESHOLD))


def _seconds(values: dict[str, str], name: str, default: float) -> float:
    text = values.get(name)
    if text is None:
        return default
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"{name} takes seconds, not {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"{name} must be a positive number of seconds, not {text!r}")
    return seconds


class Expired(BaseException):
    """Raised by the interval timer at the deadline, out of whatever call still blocks.

    A BaseException so that no library's ``except Exception`` swallows it.
    """


class Deadline:
    """The probe's whole time budget, measured from the start of ``main``."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.started = time.monotonic()
        self.step = "starting"

    def remaining(self) -> float:
        """Time left for a socket or child timeout, keeping a margin to report."""
        return max(0.01, self.total - (time.monotonic() - self.started) - _MARGIN)


def _arm(seconds: float) -> Callable[[], None]:
    """Make SIGALRM raise Expired after ``seconds``; returns the undo.

    Socket timeouts bound each read, not a whole call (a peer trickling bytes could outlast
    them); the timer bounds the whole probe. Signals work only in the main thread: elsewhere
    (an embedding caller) the socket timeouts alone apply.
    """
    import signal

    def expire(signum: int, frame: object) -> None:
        raise Expired

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        return lambda: None
    signal.setitimer(signal.ITIMER_REAL, seconds)

    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    return disarm


def xml_fields(xml: str) -> tuple[str, dict[str, str]]:
    """The root tag of ``xml`` and the text of its direct children (first of each name).

    expat is already loaded by xmlrpc.client, so this costs nothing to import (ElementTree
    would). Raises ``ValueError`` for malformed XML.
    """
    from xml.parsers import expat

    root: list[str] = []
    path: list[str] = []
    text: list[str] = []
    fields: dict[str, str] = {}

    def start(name: str, attributes: dict[str, str]) -> None:
        if not root:
            root.append(name)
        path.append(name)
        if len(path) == 2:
            text.clear()

    def end(name: str) -> None:
        if len(path) == 2:
            fields.setdefault(name, "".join(text).strip())
        path.pop()

    def characters(data: str) -> None:
        if len(path) == 2:
            text.append(data)

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as exc:
        raise ValueError(f"malformed XML ({exc})") from None
    return root[0], fields


def _short(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _DETAIL_LIMIT else line[: _DETAIL_LIMIT - 3] + "..."


class _Oned:
    """oned's XML-RPC API as ``oneuser`` finds it: ONE_AUTH or one_auth, ONE_XMLRPC or local."""

    def __init__(self, layout: Layout, deadline: Deadline) -> None:
        from onerun.runtime.oneapi import endpoint_from_env, one_auth_path

        self.endpoint = endpoint_from_env()
        self.auth_path = one_auth_path(layout.one_auth)
        self.deadline = deadline

    def session(self) -> str:
        from onerun.runtime.oneapi import OneApiError, read_session

        try:
            return read_session(self.auth_path)
        except OSError as exc:
            raise ProbeFailure(f"cannot read credentials {self.auth_path}: "
                               f"{exc.strerror or exc}") from None
        except OneApiError as exc:
            raise ProbeFailure(f"cannot use credentials: {exc}") from None

    def call(self, session: str, method: str, timeout: float, *args: object) -> str:
        """The call's string value, or ProbeFailure saying why not in oned's terms."""
        from onerun.runtime.oneapi import OneApiError, OneClient

        self.deadline.step = method
        try:
            value = OneClient(self.endpoint, session, timeout).call(method, *args)
        except OneApiError as exc:
            cause = exc.__cause__
            if isinstance(cause, TimeoutError):
                raise ProbeFailure(f"oned did not answer {method} within {timeout:.2f} s "
                                   f"at {self.endpoint}") from None
            if isinstance(cause, ConnectionRefusedError):
                raise ProbeFailure(f"oned refuses connections at {self.endpoint}") from None
            if exc.code == AUTHENTICATION_ERROR:
                raise ProbeFailure(f"oned rejected the credentials in {self.auth_path}: "
                                   f"{_short(exc)}") from None
            raise ProbeFailure(_short(exc)) from None
        if not isinstance(value, str):
            raise ProbeFailure(f"{method} answered a {type(value).__name__}, not XML")
        return value


class ProbeFailure(Exception):
    """The probe's answer is 'not healthy'; the message is the reason."""


def _check_user0(oned: _Oned, session: str, timeout: float) -> None:
    """What ``oneuser show 0`` checks: oned's API, authentication and DB answer for user 0."""
    body = oned.call(session, "one.user.info", timeout, 0, False)
    try:
        root, fields = xml_fields(body)
    except ValueError as exc:
        raise ProbeFailure(f"one.user.info answered {exc}") from None
    if root != "USER" or fields.get("ID") != "0":
        raise ProbeFailure(f"one.user.info answered <{root}> with ID {fields.get('ID')!r}, "
                           "not user 0")


def check_startup(layout: Layout, deadline: Deadline) -> str:
    """oned has finished its bootstrap (or schema upgrade) when user 0 can be read."""
    oned = _Oned(layout, deadline)
    _check_user0(oned, oned.session(), deadline.remaining())
    return "oned answers one.user.info for user 0"


def check_readiness(layout: Layout, deadline: Deadline) -> str:
    """user 0 readable and this oned not in an election (a candidate refuses leader-only calls).

    The two calls share the deadline: the first may take half of it, the second the rest.
    """
    oned = _Oned(layout, deadline)
    session = oned.session()
    _check_user0(oned, session, deadline.remaining() / 2)
    body = oned.call(session, "one.zone.raftstatus", deadline.remaining())
    try:
        root, fields = xml_fields(body)
    except ValueError as exc:
        raise ProbeFailure(f"one.zone.raftstatus answered {exc}") from None
    state = fields.get("STATE") if root == "RAFT" else None
    if state == RAFT_CANDIDATE:
        raise ProbeFailure("raft state candidate: an election is in progress")
    if state not in RAFT_STATES:
        raise ProbeFailure(f"one.zone.raftstatus answered an unknown state {state!r}")
    return f"oned answers for user 0, raft state {RAFT_STATES[state]}"


def check_via_cli(layout: Layout, deadline: Deadline) -> str:
    """The community image's check, ``oneuser show 0``, bounded by the deadline."""
    import subprocess

    from onerun.runtime.oneapi import one_auth_path

    packaged = layout.binary("/usr/bin/oneuser")
    program = str(packaged) if packaged.exists() else "oneuser"
    environment = dict(os.environ, ONE_AUTH=str(one_auth_path(layout.one_auth)))
    timeout = deadline.remaining()
    deadline.step = "oneuser show 0"
    try:
        done = subprocess.run([program, "show", "0"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=environment, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ProbeFailure(f"{program} not found") from None
    except subprocess.TimeoutExpired:
        raise ProbeFailure(f"oneuser show 0 did not finish within {timeout:.2f} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {_short(lines[-1])}" if lines else ""
        raise ProbeFailure(f"oneuser show 0 exited {done.returncode}{detail}")
    return "oneuser show 0 succeeded"


def check_liveness(layout: Layout, deadline: Deadline, grace: float,
                   api_threshold: float = DEFAULT_API_THRESHOLD) -> str:
    """Alive while supervisord runs oned (STARTING or RUNNING) and no critical program is FATAL.

    Critical means what supervisord's hook ends the pod for (onerun.runtime.critical): another
    service that stays FATAL leaves the pod up, as the hook does, so a broken FireEdge
    does not restart oned. A busy oned (bootstrap, upgrade, slow DB) must not get the pod
    killed: only an oned RUNNING for longer than ``grace`` (supervisord's own
    ``start``/``now`` times) whose port refuses connections now, or whose API has
    answered nothing for ``api_threshold`` seconds, counts as dead.
    """
    from onerun.runtime.critical import CRITICAL_PROGRAMS

    processes = supervisor_processes(str(layout.supervisor_sock), deadline)
    by_name = {str(process.get("name")): process for process in processes}
    fatal = sorted(name for name, process in by_name.items()
                   if process.get("statename") == "FATAL")
    critical = [name for name in fatal if name in CRITICAL_PROGRAMS]
    if critical:
        raise ProbeFailure(f"supervisord reports FATAL: {', '.join(critical)}")
    oned = by_name.get("oned")
    if oned is None:
        raise ProbeFailure("supervisord runs no program named oned")
    state = oned.get("statename")
    if state not in ("STARTING", "RUNNING"):
        raise ProbeFailure(f"oned is {state} under supervisord")
    note = f"; FATAL, not critical: {', '.join(fatal)}" if fatal else ""
    if state == "STARTING":
        return f"oned STARTING under supervisord{note}"
    up = _as_int(oned.get("now")) - _as_int(oned.get("start"))
    if up <= grace:
        return f"oned RUNNING for {up} s (port checked after {grace:g} s){note}"
    identity = f"{_as_int(oned.get('pid'))}:{_as_int(oned.get('start'))}"
    return _check_oned_answers(layout, identity, up, deadline, api_threshold) + note


def _as_int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _check_oned_answers(layout: Layout, identity: str, up: int, deadline: Deadline,
                        api_threshold: float) -> str:
    """oned RUNNING past the grace: its XML-RPC port must not refuse a connection, and its
    API must have answered something within ``api_threshold`` seconds.

    A connected socket proves little: the kernel completes connections into the listen
    backlog even when oned never calls accept. So the API is asked too (one.user.info, as
    the startup probe asks; any XML-RPC answer counts, a refused login included), at most
    once every API_RECHECK seconds while it answers. When it last answered is kept in
    /run/onerun/liveness.json, per oned process (pid and start time), so a new oned starts
    a new count. A probe that cannot write the file never fails on the API: no evidence,
    no restart.
    """
    import socket
    from urllib.parse import urlsplit

    from onerun.runtime.oneapi import endpoint_from_env

    endpoint = endpoint_from_env()
    url = urlsplit(endpoint)
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if url.scheme == "https" else 80)
    where = f"{host}:{port}"
    deadline.step = f"connecting to {where}"
    try:
        with socket.create_connection((host, port), timeout=deadline.remaining()):
            pass
    except ConnectionRefusedError:
        raise ProbeFailure(f"oned RUNNING for {up} s but {where} refuses connections") from None
    except OSError as exc:
        # Not a refusal (a full backlog, a slow resolver): busy or wedged, the API decides.
        why = f"{where} did not accept in time ({exc})"
    else:
        why = ""
    state_file = layout.run_onerun / LIVENESS_STATE
    state = _read_liveness_state(state_file, identity)
    now = time.time()
    if state is not None and state[1] and now - state[0] < API_RECHECK:
        return f"oned RUNNING for {up} s, {where} accepts connections; its API answered " \
               f"{now - state[0]:.0f} s ago"
    if not why:
        why = _api_silence(layout, deadline, endpoint)
    if not why:
        _write_liveness_state(state_file, identity, now, True)
        return f"oned RUNNING for {up} s, {where} accepts connections; its API answered"
    since = state[0] if state is not None else now
    if state is None or state[1]:
        _write_liveness_state(state_file, identity, since, False)
    silent = now - since
    if silent >= api_threshold:
        raise ProbeFailure(f"oned RUNNING for {up} s but its API has answered nothing for "
                           f"{silent:.0f} s (threshold {api_threshold:g} s): {why}")
    port_note = "" if why.startswith(where) else f", {where} accepts connections"
    return (f"oned RUNNING for {up} s{port_note}; its API has not answered for {silent:.0f} s "
            f"({why}); not alive after {api_threshold:g} s")


def _api_silence(layout: Layout, deadline: Deadline, endpoint: str) -> str:
    """Why oned's API gave no answer in the time left, or "" when it answered anything."""
    import http.client
    import xmlrpc.client

    from onerun.runtime.oneapi import OneApiError, OneClient, one_auth_path, read_session

    try:
        session = read_session(one_auth_path(layout.one_auth))
    except (OSError, OneApiError):
        session = "oneadmin:liveness-probe"  # a refused login is an answer too
    timeout = deadline.remaining()
    deadline.step = "one.user.info"
    try:
        OneClient(endpoint, session, timeout).call("one.user.info", 0, False)
    except OneApiError as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, xmlrpc.client.Error):
            return ""  # oned's own failure array, a fault or an HTTP error: it answered
        if isinstance(cause, TimeoutError):
            return f"no answer to one.user.info within {timeout:.2f} s"
        if isinstance(cause, OSError | http.client.HTTPException):
            return f"one.user.info: {_short(cause)}"
        return f"one.user.info: {_short(exc)}"
    return ""


def _read_liveness_state(path: Path, identity: str) -> tuple[float, bool] | None:
    """(since, answered) recorded for this oned process, or None."""
    import json

    try:
        data = json.loads(path.read_text())
        if data["oned"] == identity:
            return float(data["since"]), bool(data["answered"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_liveness_state(path: Path, identity: str, since: float, answered: bool) -> None:
    """Temp file and rename; a failure leaves the probe stateless (it never fails then)."""
    import json

    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"oned": identity, "since": since, "answered": answered}))
        tmp.replace(path)
    except OSError:
        import contextlib  # loaded already by http.client

        with contextlib.suppress(OSError):
            tmp.unlink()


def supervisor_processes(socket_path: str, deadline: Deadline) -> list[dict[str, object]]:
    """``supervisor.getAllProcessInfo`` over supervisord's unix socket, stdlib only.

    The supervisor package's own client would import far more than the probe can afford.
    """
    import http.client
    import socket
    import xmlrpc.client

    if not os.path.exists(socket_path):
        raise ProbeFailure(f"supervisord is not running ({socket_path} is absent)")
    timeout = deadline.remaining()

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(socket_path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    class UnixTransport(xmlrpc.client.Transport):
        def make_connection(self, host: object) -> http.client.HTTPConnection:
            return UnixConnection("localhost", timeout=timeout)

    deadline.step = "supervisor.getAllProcessInfo"
    proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=UnixTransport())
    try:
        answer = proxy.supervisor.getAllProcessInfo()
    except ConnectionRefusedError:
        raise ProbeFailure(f"supervisord is not running ({socket_path} refuses "
                           "connections)") from None
    except TimeoutError:
        raise ProbeFailure(f"supervisord did not answer within {timeout:.2f} s") from None
    except (OSError, http.client.HTTPException, xmlrpc.client.Error) as exc:
        raise ProbeFailure(f"cannot ask supervisord: {_short(exc)}") from None
    if not isinstance(answer, list):
        raise ProbeFailure("supervisord answered getAllProcessInfo with no list")
    return [process for process in answer if isinstance(process, dict)]


_VERDICTS = {
    "startup": ("started", "not started"),
    "readiness": ("ready", "not ready"),
    "liveness": ("alive", "not alive"),
}


def run(options: Options, deadline: Deadline) -> Outcome:
    """The probe's verdict and its reason."""
    layout = Layout.from_env(options.root)
    if layout.maintenance_flag.exists():
        if options.kind == "readiness":
            return False, f"maintenance mode ({layout.maintenance_flag} is present)"
        if options.kind == "liveness":  # OpenNebula is stopped on purpose; supervisord is not
            supervisor_processes(str(layout.supervisor_sock), deadline)
            return True, "maintenance mode: supervisord answers, OpenNebula stopped on purpose"
        return True, "maintenance mode: OpenNebula is stopped on purpose"
    if options.via_cli:
        return True, check_via_cli(layout, deadline)
    if options.kind == "liveness":
        return True, check_liveness(layout, deadline, options.grace, options.api_threshold)
    if options.kind == "readiness":
        return True, check_readiness(layout, deadline)
    return True, check_startup(layout, deadline)


def main(argv: list[str]) -> int:
    """Run one probe; print one line; 0 when healthy, 1 otherwise."""
    try:
        options = parse_args(argv)
    except UsageError as exc:
        print(f"{exc}; {USAGE}")
        return 1
    deadline = Deadline(options.timeout)
    disarm = _arm(options.timeout)
    try:
        try:
            healthy, reason = run(options, deadline)
        except ProbeFailure as exc:
            healthy, reason = False, str(exc)
        finally:
            disarm()
    except Expired:
        disarm()  # again: the timer may have fired inside the first disarm
        healthy, reason = False, f"no answer within {options.timeout:g} s ({deadline.step})"
    good, bad = _VERDICTS[options.kind]
    print(f"{good if healthy else bad}: {reason}")
    sys.stdout.flush()
    return 0 if healthy else 1
