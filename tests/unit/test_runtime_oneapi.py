"""The stdlib XML-RPC client against a local server that answers in oned's array shape."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCServer

import pytest

from onerun.runtime.oneapi import (
    AUTHENTICATION_ERROR,
    DEFAULT_ENDPOINT,
    OneApiError,
    OneClient,
    endpoint_from_env,
    one_auth_path,
    read_session,
)

SESSION = "oneadmin:apipass"


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


class StandInOned:
    """Not oned: a threaded XML-RPC server with a few one.* methods answering like oned."""

    def __init__(self) -> None:
        self.sessions: list[str] = []
        self.release = threading.Event()
        self.server = _Server(("127.0.0.1", 0), logRequests=False, allow_none=True)
        self.server.register_function(self.version, "one.system.version")
        self.server.register_function(self.user_info, "one.user.info")
        self.server.register_function(self.slow, "one.zone.raftstatus")
        self.server.register_function(self.odd, "one.odd")
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def version(self, session: str) -> list[object]:
        self.sessions.append(session)
        return [True, "7.0.0", 0]

    def user_info(self, session: str, user_id: int) -> list[object]:
        self.sessions.append(session)
        if session != SESSION:
            return [False, "[one.user.info] User couldn't be authenticated, aborting call.",
                    AUTHENTICATION_ERROR, -1, -1]
        return [True, f"<USER><ID>{user_id}</ID></USER>", 0]

    def slow(self, session: str) -> list[object]:
        self.release.wait(10)
        return [True, "late", 0]

    def odd(self, session: str) -> object:
        return "not an array"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def oned() -> Iterator[StandInOned]:
    server = StandInOned()
    yield server
    server.close()


def test_success_returns_the_value_and_sends_the_session(oned: StandInOned) -> None:
    client = OneClient(oned.endpoint, SESSION, timeout=5)
    assert client.call("one.system.version") == "7.0.0"
    assert client.call("one.user.info", 0) == "<USER><ID>0</ID></USER>"
    assert oned.sessions == [SESSION, SESSION]


def test_failure_carries_oned_message_and_code(oned: StandInOned) -> None:
    client = OneClient(oned.endpoint, "oneadmin:wrong", timeout=5)
    with pytest.raises(OneApiError) as raised:
        client.call("one.user.info", 0)
    assert raised.value.code == AUTHENTICATION_ERROR
    assert "couldn't be authenticated" in str(raised.value)
    assert str(raised.value).startswith("one.user.info: ")


def test_fault_and_odd_answers_are_errors_without_code(oned: StandInOned) -> None:
    client = OneClient(oned.endpoint, SESSION, timeout=5)
    with pytest.raises(OneApiError) as fault:
        client.call("one.no.such.method")
    assert fault.value.code is None
    with pytest.raises(OneApiError, match="unexpected response shape") as odd:
        client.call("one.odd")
    assert odd.value.code is None


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_transport_error_has_no_code() -> None:
    client = OneClient(f"http://127.0.0.1:{_unused_port()}/RPC2", SESSION, timeout=2)
    with pytest.raises(OneApiError) as raised:
        client.call("one.system.version")
    assert raised.value.code is None
    assert "ConnectionRefusedError" in str(raised.value)


def test_an_empty_answer_is_an_api_error() -> None:
    """An oned killed while it answers (seen when a Raft leader is SIGKILLed) leaves an HTTP
    answer with no XML: the caller must get OneApiError, not the XML parser's error."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_nothing() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                                   b"Content-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_nothing, daemon=True)
        thread.start()
        client = OneClient(f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2", SESSION, 5)
        with pytest.raises(OneApiError) as raised:
            client.call("one.zone.raftstatus")
        thread.join(5)
    assert raised.value.code is None


def test_timeout_is_honoured(oned: StandInOned) -> None:
    client = OneClient(oned.endpoint, SESSION, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(OneApiError) as raised:
        client.call("one.zone.raftstatus")
    assert time.monotonic() - started < 5  # the server would answer only after 10 s
    assert raised.value.code is None


def test_read_session_takes_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "one_auth"
    path.write_text("oneadmin:first\r\nother:second\n")
    assert read_session(path) == "oneadmin:first"


@pytest.mark.parametrize("text", ["", "\n", "oneadmin\n", "\noneadmin:on-second-line\n"])
def test_read_session_rejects_a_first_line_without_colon(tmp_path: Path, text: str) -> None:
    path = tmp_path / "one_auth"
    path.write_text(text)
    with pytest.raises(OneApiError, match="user:password"):
        read_session(path)


def test_endpoint_from_env() -> None:
    assert endpoint_from_env({}) == DEFAULT_ENDPOINT
    assert endpoint_from_env({"ONE_XMLRPC": ""}) == DEFAULT_ENDPOINT
    assert endpoint_from_env({"ONE_XMLRPC": "http://oned:2633/RPC2"}) == "http://oned:2633/RPC2"


def test_endpoint_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONE_XMLRPC", "http://elsewhere:2633/RPC2")
    assert endpoint_from_env() == "http://elsewhere:2633/RPC2"


def test_one_auth_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "var/lib/one/.one/one_auth"
    assert one_auth_path(default, {}) == default
    assert one_auth_path(default, {"ONE_AUTH": ""}) == default
    assert one_auth_path(default, {"ONE_AUTH": "/secrets/one_auth"}) == Path("/secrets/one_auth")
    monkeypatch.setenv("ONE_AUTH", str(tmp_path / "elsewhere"))
    assert one_auth_path(default) == tmp_path / "elsewhere"
