"""The zone service between members: signed requests, reports, and a copy of a real one.db
(written by oned 7.0.0) served over a real socket. The source DB must come out unchanged."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import sqlite3
import tarfile
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from testlib import DB_FIXTURES, require_shared

from onerun.ha import wire
from onerun.ha.formation import Phase, Report
from onerun.ha.zone import LEADER, RaftStatus, ZoneServer, local_servers

PASSWORD = "zone-Secret_1"
REPORT = Report("one-0", Phase.MEMBER, "http://one-0.h:2633/RPC2", False,
                RaftStatus(0, LEADER, 3, 12, 12),
                (ZoneServer(0, "one-0", "http://one-0.h:2633/RPC2"),))


def test_a_signature_proves_the_password_for_one_method_path_and_time() -> None:
    header = wire.sign(PASSWORD, "GET", "/v1/report", now=1000)
    assert PASSWORD not in header
    assert wire.verify(PASSWORD, "GET", "/v1/report", header, now=1000) == 1000
    assert wire.verify(PASSWORD, "GET", "/v1/report", header, now=1000 + wire.SKEW) == 1000
    assert wire.verify("another", "GET", "/v1/report", header, now=1000) is None
    assert wire.verify(PASSWORD, "GET", "/v1/snapshot", header, now=1000) is None
    assert wire.verify(PASSWORD, "GET", "/v1/report", header, now=1001 + wire.SKEW) is None
    for bad in (None, "", "Basic b25lYWRtaW46eA==", "Onerun-HMAC ts=x,sig=y"):
        assert wire.verify(PASSWORD, "GET", "/v1/report", bad, now=1000) is None


def test_a_report_survives_its_json_form() -> None:
    assert wire.report_from_json(wire.report_to_json(REPORT)) == REPORT
    with pytest.raises(ValueError, match="not a member report"):
        wire.report_from_json({"name": "x"})


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A member's volume: a real bootstrapped one.db and two service auth files."""
    db = tmp_path / "member" / "one.db"
    db.parent.mkdir()
    shutil.copyfile(require_shared(DB_FIXTURES / "sqlite-bootstrapped" / "one.db"), db)
    files = {}
    for name in ("sunstone_auth", "oneflow_auth"):
        files[name] = tmp_path / "member" / name
        files[name].write_text("serveradmin:abc123\n")
    files["onegate_auth"] = tmp_path / "member" / "onegate_auth"  # absent: left out
    return db, files


def serve(state: wire.ServiceState, scratch: Path) -> Iterator[str]:
    responder = wire.Responder(("127.0.0.1", 0), state, scratch)
    try:
        yield f"127.0.0.1:{responder.server.server_address[1]}"
    finally:
        responder.close()


@pytest.fixture
def member(tmp_path: Path, source: tuple[Path, dict[str, Path]]) -> Iterator[str]:
    db, files = source
    state = wire.ServiceState(
        password=lambda: PASSWORD, report=lambda: REPORT,
        snapshot=lambda target: wire.write_sqlite_snapshot(db, files, target))
    yield from serve(state, tmp_path)


def test_a_peer_with_the_password_gets_the_report(member: str) -> None:
    peer = wire.ask(member, PASSWORD)
    assert peer.report == REPORT and peer.error is None and not peer.refused_credentials


def test_a_peer_with_another_password_is_refused(member: str) -> None:
    peer = wire.ask(member, "not-the-zone's")
    assert peer.report is None and peer.refused_credentials


def test_an_unreachable_peer_is_an_error_not_a_report(member: str) -> None:
    closed = wire.ask("127.0.0.1:1", PASSWORD, timeout=1)
    assert closed.report is None and not closed.refused_credentials and closed.error


def test_an_answer_without_the_proof_is_not_trusted(tmp_path: Path) -> None:
    """A server that does not know the password cannot pass itself off as a member."""

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"name": "one-0"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        peer = wire.ask(f"127.0.0.1:{server.server_address[1]}", PASSWORD)
        assert peer.report is None and "without proving" in (peer.error or "")
        with pytest.raises(wire.WireError, match="without proving"):
            wire.fetch_snapshot(f"127.0.0.1:{server.server_address[1]}", PASSWORD,
                                tmp_path / "x.tar")
    finally:
        server.shutdown()
        server.server_close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_snapshot_is_a_copy_and_the_source_is_unchanged(
        member: str, source: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    db, _ = source
    before = (digest(db), db.stat().st_mtime_ns)
    target = tmp_path / "joiner"
    target.mkdir()
    wire.fetch_snapshot(member, PASSWORD, target / "snapshot.tar")
    copy, files = wire.unpack_snapshot(target / "snapshot.tar", target)
    assert (digest(db), db.stat().st_mtime_ns) == before
    assert sorted(files) == ["oneflow_auth", "sunstone_auth"]
    assert files["oneflow_auth"] == b"serveradmin:abc123\n"
    query = "SELECT oid, body FROM user_pool ORDER BY oid"
    with closing(sqlite3.connect(db)) as a, closing(sqlite3.connect(copy)) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
    assert local_servers(copy) == ()  # the fixture is a solo DB: an empty SERVER_POOL
    assert copy.stat().st_mode & 0o777 == 0o600


def test_a_waiting_member_has_nothing_to_copy(tmp_path: Path) -> None:
    state = wire.ServiceState(password=lambda: PASSWORD, report=lambda: REPORT)
    for address in serve(state, tmp_path):
        with pytest.raises(wire.WireError, match="409"):
            wire.fetch_snapshot(address, PASSWORD, tmp_path / "x.tar")


def test_unpacking_takes_only_the_expected_plain_files(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("one.db", b"db"), ("../escape", b"x"), ("dot_one/../../x", b"y"),
                           ("dot_one/sunstone_auth", b"serveradmin:s\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("dot_one/oneflow_auth")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    out = tmp_path / "out"
    out.mkdir()
    db, files = wire.unpack_snapshot(archive, out)
    assert db == out / "one.db" and files == {"sunstone_auth": b"serveradmin:s\n"}
    assert sorted(p.name for p in out.iterdir()) == ["one.db"]
    assert not (tmp_path / "escape").exists()
