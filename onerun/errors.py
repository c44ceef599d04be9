"""Errors that end a command, each carrying its documented exit code.

Nothing else in onerun calls ``sys.exit``: the CLI maps these types to exit codes
(README, "Exit codes").
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_SETTINGS = 2
EXIT_REFUSED = 3
EXIT_DEPENDENCY = 4


class OnerunError(Exception):
    """Base of every error onerun reports to the operator."""

    exit_code = EXIT_UNEXPECTED


@dataclass(frozen=True)
class Problem:
    """One bad setting: which variable, which rule it broke, how to fix it."""

    variable: str
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.rule} (fix: {self.fix})"


class SettingsError(OnerunError):
    """Invalid settings, every problem listed at once. Never contains a secret."""

    exit_code = EXIT_SETTINGS

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid settings ({len(problems)} problem(s)):\n{lines}")


class UnsafeStateError(OnerunError):
    """Starting would risk data or start a front-end that cannot work."""

    exit_code = EXIT_REFUSED

    def __init__(self, reason: str, fix: str) -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"refusing to start: {reason}\n  fix: {fix}")


class DependencyUnavailable(OnerunError):
    """A dependency (the database) did not become available in time."""

    exit_code = EXIT_DEPENDENCY


class BackupError(OnerunError):
    """A backup or restore could not be made; what exists is unchanged (restore: see text)."""


class Interrupted(OnerunError):
    """SIGTERM or SIGINT arrived while onerun waited: the pod is going away, stop at once."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process ended by the signal

    def __init__(self, message: str = "stopped by a signal") -> None:
        super().__init__(message)
