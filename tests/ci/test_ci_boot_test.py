"""ci.boot_test's waiting and API plumbing, offline, with a stand-in container object (a
plain Python class named as such; the real runs are in tests/boot and need Docker)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from ci import boot_test


@dataclass
class Result:
    exit_code: int | None
    output: bytes


@dataclass
class StandInContainer:
    """Answers exec_run from a script of results and records what was run."""

    results: list[Result]
    calls: list[tuple[list[str], dict[str, str] | None]] = field(default_factory=list)

    def exec_run(self, cmd: Sequence[str], environment: Mapping[str, str] | None = None,
                 user: str = "") -> Result:
        self.calls.append((list(cmd), dict(environment) if environment else None))
        return self.results.pop(0)

    def logs(self, tail: int | str = "all") -> bytes:
        return b"oned: Could not open connect to database server\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_ready_polls_the_readiness_probe_until_it_passes() -> None:
    box = StandInContainer([Result(1, b"oned not answering"), Result(1, b""), Result(0, b"")])
    clock = Clock()
    took = boot_test.wait_ready(box, timeout=60, interval=5, clock=clock, sleep=clock.sleep)
    assert took == 10
    assert [cmd for cmd, _ in box.calls] == [["onerun", "probe", "readiness"]] * 3


def test_wait_ready_timeout_carries_the_evidence() -> None:
    box = StandInContainer([Result(1, b"readiness: oned unreachable")] * 5)
    clock = Clock()
    with pytest.raises(boot_test.BootTestError) as info:
        boot_test.wait_ready(box, timeout=10, interval=5, clock=clock, sleep=clock.sleep)
    message = str(info.value)
    assert "readiness not reached within 10s" in message
    assert "readiness: oned unreachable" in message
    assert "Could not open connect to database server" in message


def test_api_call_keeps_the_session_out_of_argv() -> None:
    answer = json.dumps({"ok": True, "value": "<USER><NAME>oneadmin</NAME></USER>"})
    box = StandInContainer([Result(0, answer.encode() + b"\n")])
    value = boot_test.api_call(box, "oneadmin", "s3cret-pw", "one.user.info", 0)
    assert value == "<USER><NAME>oneadmin</NAME></USER>"
    argv, env = box.calls[0]
    assert not any("s3cret-pw" in part for part in argv)
    assert env is not None and env["BOOT_SESSION"] == "oneadmin:s3cret-pw"
    assert json.loads(env["BOOT_CALL"]) == ["one.user.info", [0]]


def test_api_error_and_garbage_raise() -> None:
    failed = json.dumps({"ok": False, "error": "one.user.info: User couldn't be authenticated"})
    box = StandInContainer([Result(0, failed.encode()), Result(1, b"Traceback ...")])
    with pytest.raises(boot_test.BootTestError, match="authenticated"):
        boot_test.api_call(box, "oneadmin", "pw", "one.user.info", 0)
    with pytest.raises(boot_test.BootTestError, match="no answer"):
        boot_test.api_call(box, "oneadmin", "pw", "one.user.info", 0)


def test_images_from_env() -> None:
    assert boot_test.Images.from_env({}) == boot_test.Images(boot_test.DEFAULT_IMAGE, None)
    env = {"BOOT_IMAGE": "ghcr.io/x/opennebula:7.4.1", "BOOT_PREVIOUS_IMAGE": "ghcr.io/x/o:7.4.0"}
    assert boot_test.Images.from_env(env) == boot_test.Images(
        "ghcr.io/x/opennebula:7.4.1", "ghcr.io/x/o:7.4.0"
    )


def test_the_upgrade_test_skips_only_on_a_declared_first_release() -> None:
    missing = boot_test.Images.from_env({})
    assert missing.why_no_upgrade_test(require_docker=True) is None  # a failure in CI
    assert "BOOT_PREVIOUS_IMAGE" in str(missing.why_no_upgrade_test(require_docker=False))
    first = boot_test.Images.from_env({"BOOT_FIRST_RELEASE": "1"})
    assert "first" in str(first.why_no_upgrade_test(require_docker=True)).lower()
    given = boot_test.Images.from_env({"BOOT_PREVIOUS_IMAGE": "ghcr.io/x/o:7.4.0"})
    assert given.why_no_upgrade_test(require_docker=True) is None
