"""A string that never prints itself: secrets stay out of logs, reprs and tracebacks."""

from __future__ import annotations

import hashlib


class Secret:
    """Holds a secret value; ``str``/``repr`` show a mask, ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def sha256(self) -> str:
        """Hex sha256, as oned stores core-driver passwords (src/um/User.cc)."""
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
