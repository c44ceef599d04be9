"""onerun's zone service between members: a member's report and a copy of its database.

Why a service of its own: in Kubernetes a joining pod cannot read another pod's volume, and
oned's API has no call that hands out its database (the Raft log only carries writes made
since HA was enabled). So every member runs a small HTTP service (the ``onerun-zone``
program, and a responder while ``onerun start`` forms the zone) that answers

- ``GET /v1/report``: name, phase, DB empty or not, Raft status and the zone's servers;
- ``GET /v1/snapshot``: a tar of one.db, copied with sqlite's online backup API from a
  read-only connection (the source DB cannot be written by it), and the service auth files.

Authentication: both sides know oneadmin's password (ONEADMIN_PASSWORD, one Secret for the
zone). A request carries ``Authorization: Onerun-HMAC ts=<unix time>,sig=<hex>`` with
sig = HMAC-SHA256(password, "<ts>\\n<method>\\n<path>"), accepted within SKEW seconds; the
answer carries ``X-Onerun-Proof`` = HMAC-SHA256(password, "answer\\n<ts>\\n<path>"), so
neither side sends the password and a peer without it can neither read nor impersonate. The
body is not encrypted (oned's XML-RPC between members is plain HTTP too): run the zone on
the cluster network, as oned's own Raft traffic.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import http.server
import json
import os
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onerun.ha.formation import Peer, Phase, Report
from onerun.ha.zone import RaftStatus, ZoneServer

SKEW = 300  # seconds a signed request stays valid
QUERY_TIMEOUT = 3.0
SNAPSHOT_TIMEOUT = 120.0
SNAPSHOT_DB = "one.db"
SNAPSHOT_DOT_ONE = "dot_one/"
_SCHEME = "Onerun-HMAC"


class WireError(Exception):
    """A peer could not be asked, or its answer cannot be trusted or read."""


def _mac(password: str, message: str) -> str:
    return hmac.new(password.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(password: str, method: str, path: str, now: float | None = None) -> str:
    """The Authorization header value of a request."""
    stamp = int(time.time() if now is None else now)
    signature = _mac(password, f"{stamp}\n{method}\n{path}")
    return f"{_SCHEME} ts={stamp},sig={signature}"


def verify(password: str, method: str, path: str, header: str | None,
           now: float | None = None) -> int | None:
    """The request's timestamp when ``header`` proves the password, else None."""
    if not header or not header.startswith(f"{_SCHEME} "):
        return None
    fields = dict(part.partition("=")[::2] for part in header[len(_SCHEME) + 1:].split(","))
    try:
        stamp = int(fields.get("ts", ""))
    except ValueError:
        return None
    current = time.time() if now is None else now
    if abs(current - stamp) > SKEW:
        return None
    expected = _mac(password, f"{stamp}\n{method}\n{path}")
    return stamp if hmac.compare_digest(expected, fields.get("sig", "")) else None


def proof(password: str, stamp: int, path: str) -> str:
    return _mac(password, f"answer\n{stamp}\n{path}")


# --- reports as JSON ----------------------------------------------------------------------

def report_to_json(report: Report) -> dict[str, Any]:
    raft = report.raft
    return {
        "name": report.name, "phase": report.phase.value, "endpoint": report.endpoint,
        "db_empty": report.db_empty,
        "raft": None if raft is None else {
            "server_id": raft.server_id, "state": raft.state, "term": raft.term,
            "commit": raft.commit, "log_index": raft.log_index},
        "servers": [{"id": s.id, "name": s.name, "endpoint": s.endpoint}
                    for s in report.servers],
    }


def report_from_json(data: Any) -> Report:
    """ValueError when ``data`` is not a report."""
    try:
        raft = data["raft"]
        return Report(
            name=str(data["name"]), phase=Phase(data["phase"]), endpoint=str(data["endpoint"]),
            db_empty=bool(data["db_empty"]),
            raft=None if raft is None else RaftStatus(
                int(raft["server_id"]), int(raft["state"]), int(raft["term"]),
                int(raft["commit"]), int(raft["log_index"])),
            servers=tuple(ZoneServer(int(s["id"]), str(s["name"]), str(s["endpoint"]))
                          for s in data["servers"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a member report ({exc.__class__.__name__}: {exc})") from None


# --- the server -------------------------------------------------------------------------

@dataclass
class ServiceState:
    """What the service answers with; the start's responder changes ``report`` as it goes."""

    password: Callable[[], str]  # read at each request: one_auth may be rewritten
    report: Callable[[], Report]
    snapshot: Callable[[Path], None] | None = None  # writes the tar; None: nothing to copy
    log: Callable[[str], None] = lambda _message: None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ZoneHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request would flood the pod's log every two seconds

    def do_GET(self) -> None:
        state = self.server.state
        try:
            password = state.password()
        except (OSError, ValueError) as exc:
            self._plain(503, f"no credentials to check requests with: {exc}")
            return
        stamp = verify(password, "GET", self.path, self.headers.get("Authorization"))
        if stamp is None:
            state.log(f"refused a request for {self.path} from {self.client_address[0]}: "
                      "no valid signature (another ONEADMIN_PASSWORD?)")
            self._plain(401, "a signature made with the zone's oneadmin password is needed")
            return
        if self.path == "/v1/report":
            body = json.dumps(report_to_json(state.report())).encode()
            self._send(200, "application/json", body, proof(password, stamp, self.path))
        elif self.path == "/v1/snapshot":
            self._snapshot(state, password, stamp)
        else:
            self._plain(404, "unknown path")

    def _snapshot(self, state: ServiceState, password: str, stamp: int) -> None:
        if state.snapshot is None:
            self._plain(409, "this member has no database to copy")
            return
        with tempfile.TemporaryDirectory(prefix=".onerun-snapshot-",
                                         dir=self.server.scratch) as scratch:
            tar = Path(scratch) / "snapshot.tar"
            try:
                state.snapshot(tar)
            except (OSError, sqlite3.Error, WireError) as exc:
                state.log(f"copying the database for {self.client_address[0]} failed: {exc}")
                self._plain(500, f"copying the database failed: {exc}")
                return
            state.log(f"sent a copy of the database ({tar.stat().st_size} bytes) to "
                      f"{self.client_address[0]}")
            with tar.open("rb") as stream:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(tar.stat().st_size))
                self.send_header("X-Onerun-Proof", proof(password, stamp, self.path))
                self.end_headers()
                shutil.copyfileobj(stream, self.wfile)

    def _plain(self, code: int, text: str) -> None:
        self._send(code, "text/plain; charset=utf-8", f"{text}\n".encode(), None)

    def _send(self, code: int, kind: str, body: bytes, answer_proof: str | None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if answer_proof is not None:
            self.send_header("X-Onerun-Proof", answer_proof)
        self.end_headers()
        self.wfile.write(body)


class ZoneHTTPServer(http.server.ThreadingHTTPServer):
    """The zone service's HTTP server; ``scratch`` holds snapshots while they are sent."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], state: ServiceState, scratch: Path) -> None:
        self.state = state
        self.scratch = scratch
        if ":" in listen[0]:
            self.address_family = socket.AF_INET6
        super().__init__(listen, _Handler)


class Responder:
    """The zone service in a thread, for the time ``onerun start`` forms the zone."""

    def __init__(self, listen: tuple[str, int], state: ServiceState, scratch: Path) -> None:
        self.server = ZoneHTTPServer(listen, state, scratch)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="zone-responder")
        self._thread.start()

    def close(self) -> None:
        """Stop answering and free the port (the onerun-zone program binds it next)."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


# --- what a member sends ------------------------------------------------------------------

def write_sqlite_snapshot(db: Path, service_files: dict[str, Path], target: Path) -> None:
    """A tar of a consistent copy of ``db`` and the service auth files that exist.

    sqlite's backup API reads through a read-only connection in one step, so the copy is
    one consistent state even while oned writes, and the source cannot be changed by it.
    """
    copy = target.with_name("one.db")
    uri = db.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as source, \
            closing(sqlite3.connect(copy)) as destination:
        source.backup(destination)
    with tarfile.open(target, "w") as tar:
        tar.add(copy, SNAPSHOT_DB)
        for name, path in sorted(service_files.items()):
            if path.is_file():
                tar.add(path, SNAPSHOT_DOT_ONE + name)
    copy.unlink()


# --- the client -------------------------------------------------------------------------

def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _get(address: str, path: str, password: str, timeout: float) -> http.client.HTTPResponse:
    host, port = split_address(address)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    signature = sign(password, "GET", path)
    connection.request("GET", path, headers={"Authorization": signature})
    response = connection.getresponse()
    stamp = int(signature.split("ts=")[1].split(",")[0])
    if response.status == 200 and not hmac.compare_digest(
            response.getheader("X-Onerun-Proof") or "", proof(password, stamp, path)):
        response.close()
        raise WireError(f"{address} answered without proving it knows the zone's password")
    return response


def ask(address: str, password: str, timeout: float = QUERY_TIMEOUT) -> Peer:
    """A peer's report, or why there is none; never raises for a peer's failure."""
    try:
        response = _get(address, "/v1/report", password, timeout)
        with closing(response):
            body = response.read(1 << 20)
        if response.status == 401:
            return Peer(address, refused_credentials=True, error="refused our credentials")
        if response.status != 200:
            return Peer(address, error=f"HTTP {response.status}")
        return Peer(address, report_from_json(json.loads(body)))
    except (OSError, http.client.HTTPException, WireError, ValueError) as exc:
        return Peer(address, error=f"{exc.__class__.__name__}: {exc}")


def fetch_snapshot(address: str, password: str, target: Path,
                   timeout: float = SNAPSHOT_TIMEOUT) -> None:
    """Download a member's snapshot tar into ``target``; WireError on any failure."""
    try:
        response = _get(address, "/v1/snapshot", password, timeout)
        with closing(response):
            if response.status != 200:
                raise WireError(f"{address} answered HTTP {response.status}: "
                                f"{response.read(4096).decode(errors='replace').strip()}")
            with target.open("wb") as stream:
                shutil.copyfileobj(response, stream)
    except (OSError, http.client.HTTPException) as exc:
        raise WireError(f"copying the database from {address} failed: "
                        f"{exc.__class__.__name__}: {exc}") from exc


def unpack_snapshot(tar_path: Path, directory: Path) -> tuple[Path, dict[str, bytes]]:
    """The DB file and the service auth files of a snapshot, unpacked into ``directory``.

    Only the expected member names are taken, as plain files: nothing in the tar can
    write outside ``directory``.
    """
    db: Path | None = None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                if member.name == SNAPSHOT_DB:
                    db = directory / "one.db"
                    with source, db.open("wb") as out:
                        shutil.copyfileobj(source, out)
                elif (member.name.startswith(SNAPSHOT_DOT_ONE)
                      and "/" not in member.name[len(SNAPSHOT_DOT_ONE):]
                      and member.size <= 4096):
                    with source:
                        files[member.name[len(SNAPSHOT_DOT_ONE):]] = source.read()
    except (OSError, tarfile.TarError) as exc:
        raise WireError(f"the snapshot cannot be read: {exc}") from exc
    if db is None:
        raise WireError("the snapshot holds no one.db")
    with contextlib.suppress(OSError):
        os.chmod(db, 0o600)
    return db, files
