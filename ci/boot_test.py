"""What the container tier (tests/containers) needs from a running image: wait for a command
such as ``onerun probe readiness``, talk to oned through the container, all without a
network path from the test host; and which images the release workflow hands it.

Only ``docker exec`` is used to look inside (``exec_run``), so the same code works on a
laptop and on a CI runner whose containers are not reachable from the host network.
Secrets reach exec'd commands through their environment, never their argv.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_IMAGE = "onerun/opennebula:test"
READY_TIMEOUT = 900.0  # first bootstrap or a schema upgrade on a slow shared runner

# Runs inside the image with onerun's own interpreter: one XML-RPC call, JSON on stdout.
_API_SCRIPT = """
import json, os, sys
from onerun.runtime.oneapi import OneClient, OneApiError
client = OneClient("http://127.0.0.1:2633/RPC2", os.environ["BOOT_SESSION"], 30)
method, args = json.loads(os.environ["BOOT_CALL"])
try:
    print(json.dumps({"ok": True, "value": client.call(method, *args)}))
except OneApiError as exc:
    print(json.dumps({"ok": False, "error": str(exc)}))
"""


class BootTestError(AssertionError):
    """The image did not do what the boot test expects; the message carries the evidence."""


class ExecResult(Protocol):
    exit_code: int | None
    output: bytes


class Container(Protocol):
    """The part of docker-py's Container the boot test uses."""

    def exec_run(
        self, cmd: Sequence[str], environment: Mapping[str, str] | None = ..., user: str = ...
    ) -> ExecResult: ...

    def logs(self, tail: int | str = ...) -> bytes: ...


@dataclass(frozen=True)
class Images:
    """The image under test and, for the upgrade test, the previously released one."""

    current: str
    previous: str | None
    first_release: bool = False  # BOOT_FIRST_RELEASE=1: nothing released to upgrade from

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Images:
        return cls(
            current=environ.get("BOOT_IMAGE") or DEFAULT_IMAGE,
            previous=environ.get("BOOT_PREVIOUS_IMAGE") or None,
            first_release=environ.get("BOOT_FIRST_RELEASE") == "1",
        )

    def why_no_upgrade_test(self, require_docker: bool) -> str | None:
        """The skip reason when no previous image is given, or None to fail instead: where
        the boot tests are required (CI), only a declared first release may skip it."""
        if self.previous is not None:
            return None
        if self.first_release:
            return "BOOT_FIRST_RELEASE=1: no released image to upgrade from"
        if not require_docker:
            return "BOOT_PREVIOUS_IMAGE is not set: no released image to upgrade from"
        return None


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers, else why not (for the skip message)."""
    try:
        # By name: mypy would take the repository's docker/ directory for the package.
        docker = importlib.import_module("docker")
        docker.from_env().ping()
    except Exception as exc:  # any failure means: no usable engine
        return f"no Docker engine available ({exc.__class__.__name__})"
    return None


def _tail(container: Container, lines: int = 80) -> str:
    try:
        return container.logs(tail=lines).decode("utf-8", "replace")
    except Exception as exc:  # evidence must not hide the failure
        return f"(logs unavailable: {exc})"


def wait_until(
    container: Container,
    command: Sequence[str],
    timeout: float,
    what: str,
    *,
    interval: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Run ``command`` in the container until it exits 0; seconds it took. On timeout,
    raise with the command's last output and the container's log tail."""
    start = clock()
    last = b""
    while True:
        result = container.exec_run(list(command))
        if result.exit_code == 0:
            return clock() - start
        last = result.output or b""
        if clock() - start >= timeout:
            raise BootTestError(
                f"{what} not reached within {timeout:.0f}s; last output of {' '.join(command)}:\n"
                f"{last.decode('utf-8', 'replace')}\n--- container log tail ---\n{_tail(container)}"
            )
        sleep(interval)


def wait_ready(container: Container, timeout: float = READY_TIMEOUT, **kwargs: Any) -> float:
    """Wait for ``onerun probe readiness`` (what the HEALTHCHECK and the chart use)."""
    return wait_until(container, ["onerun", "probe", "readiness"], timeout, "readiness", **kwargs)


def api_call(container: Container, user: str, password: str, method: str, *args: Any) -> Any:
    """Call oned's XML-RPC API from inside the container as ``user``; the session travels
    in the exec environment. Returns the value; raises BootTestError on an API error."""
    result = container.exec_run(
        ["/opt/onerun/bin/python", "-c", _API_SCRIPT],
        environment={"BOOT_SESSION": f"{user}:{password}", "BOOT_CALL": json.dumps([method, args])},
    )
    text = (result.output or b"").decode("utf-8", "replace").strip()
    try:
        answer = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise BootTestError(f"{method}: no answer from the API helper: {text}") from exc
    if not answer["ok"]:
        raise BootTestError(f"{method} failed: {answer['error']}")
    return answer["value"]
