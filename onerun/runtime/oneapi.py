"""A minimal client of oned's XML-RPC API, stdlib only (the probe runs it every few seconds).

oned answers every method with an array ``[success, value_or_message, error_code, ...]``
(src/rm/xml-rpc/RequestXRPC.cc in OpenNebula/one); this module turns a failure into ``OneApiError``.
"""

from __future__ import annotations

import http.client
import os
import xmlrpc.client
from pathlib import Path
from xml.parsers.expat import ExpatError

# typing costs ~10 ms at import and the probe needs it only for annotations; mypy reads a
# module-level TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ENDPOINT = "http://127.0.0.1:2633/RPC2"
AUTHENTICATION_ERROR = 0x100


class OneApiError(Exception):
    """A call that did not succeed; ``code`` is oned's error code, None for transport errors."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class _TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


def endpoint_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """``ONE_XMLRPC`` as OpenNebula's clients read it, else the local oned."""
    return environ.get("ONE_XMLRPC") or DEFAULT_ENDPOINT


def one_auth_path(default: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """The file named by ``ONE_AUTH``, else ``default`` (~oneadmin/.one/one_auth under the root)."""
    named = environ.get("ONE_AUTH")
    return Path(named) if named else default


def read_session(path: Path) -> str:
    """The ``user:password`` session string: the first line of one_auth, as oned reads it."""
    text = path.read_text(encoding="utf-8")
    line = text.splitlines()[0] if text else ""
    if ":" not in line:
        raise OneApiError(f"{path} is not of the form user:password")
    return line.rstrip("\r")


class OneClient:
    """Calls ``one.*`` methods with a per-call socket timeout."""

    def __init__(self, endpoint: str, session: str, timeout: float) -> None:
        transport: xmlrpc.client.Transport = (
            _TimeoutSafeTransport(timeout) if endpoint.startswith("https") else
            _TimeoutTransport(timeout)
        )
        self._proxy = xmlrpc.client.ServerProxy(endpoint, transport=transport, allow_none=False)
        self._session = session

    def call(self, method: str, *args: Any) -> Any:
        """The call's value on success; OneApiError otherwise (transport errors included)."""
        try:
            response = getattr(self._proxy, method)(self._session, *args)
        # ExpatError: an answer cut short, e.g. by an oned killed while it answers.
        except (OSError, http.client.HTTPException, xmlrpc.client.Error, ExpatError) as exc:
            raise OneApiError(f"{method}: {exc.__class__.__name__}: {exc}") from exc
        if not isinstance(response, list | tuple) or len(response) < 2:
            raise OneApiError(f"{method}: unexpected response shape")
        if response[0] is True:
            return response[1]
        code = response[2] if len(response) > 2 and isinstance(response[2], int) else None
        raise OneApiError(f"{method}: {response[1]}", code)
