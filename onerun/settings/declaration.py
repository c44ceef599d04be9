"""The machinery behind the settings table: a declaration per variable, and one reading.

The schema is data (the idea of Patroni's patroni/validator.py): ``onerun.settings.schema``
lists every variable once, with its rule, default, secrecy and description, and
``Reading`` walks that list. Only ``Reading`` looks at the environment, and only for
declared names, so every variable onerun reads is in the table, and in docs/settings.md,
which is generated from it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onerun.errors import Problem
from onerun.settings.files import UnreadableFileError, read_regular_file

SECRET_FILE_MAX_BYTES = 64 * 1024  # a password holds at most 256 bytes
NO_DEFAULT = "\N{EN DASH}"  # the docs' default of a setting that is unset unless given

Parse = Callable[["Reading", "Declaration", str], Any]


@dataclass(frozen=True)
class Rule:
    """How a variable's text becomes a value, and that rule in words for the docs.

    ``parse`` gets the text only when the variable is set and not empty; on a bad value it
    records every problem with the reading and returns the declaration's default.
    """

    parse: Parse
    doc: str


@dataclass(frozen=True)
class Declaration:
    """One environment variable onerun reads: one row of the settings table."""

    name: str
    rule: Rule
    description: str  # what it does, for docs/settings.md
    default: Any = None  # the value when unset or empty
    field: str | None = None  # the Settings field it fills; None: a cross-setting rule uses it
    secret: bool = False  # read from NAME or from the file NAME_FILE names, never both
    default_doc: str | None = None  # the docs' default, where the value alone says too little
    requires: str = ""  # the cross-setting rules it takes part in, for the docs
    only_with: str | None = None  # read only when this earlier setting has a value

    @property
    def rule_doc(self) -> str:
        """The rules as docs/settings.md states them: across settings first, then its own."""
        ignored = f"ignored without `{self.only_with}`" if self.only_with else ""
        return "; ".join(part for part in (self.requires, ignored, self.rule.doc) if part)


class Reading:
    """One pass over the environment: each declared variable's value, and every problem.

    Problems are collected, not raised, so an operator fixes them all in one go.
    """

    def __init__(self, environ: Mapping[str, str], table: Sequence[Declaration]) -> None:
        self._environ = environ
        self._table = {declaration.name: declaration for declaration in table}
        self.problems: list[Problem] = []
        self.values: dict[str, Any] = {}
        for declaration in table:
            self.values[declaration.name] = self._read(declaration)

    def problem(self, variable: str, rule: str, fix: str) -> None:
        self.problems.append(Problem(variable, rule, fix))

    def given(self, name: str) -> bool:
        """Whether the declared variable ``name`` (or, for a secret, NAME_FILE) is set."""
        names = (name, f"{name}_FILE") if self._table[name].secret else (name,)
        return any(self._text(each) is not None for each in names)

    def text(self, name: str) -> str | None:
        """The declared variable's own text, unparsed: for a setting one is derived from."""
        if self._table[name].secret:
            raise ValueError(f"{name} is a secret: use its parsed value")
        return self._text(name)

    def file_text(self, variable: str, path: str, limit: int, fix: str) -> str | None:
        """The UTF-8 text of the file ``variable`` names, or None after recording why not.

        Decoded from bytes, not read in text mode: universal newlines would turn "\r"
        into "\n" and change a secret.
        """
        try:
            return read_regular_file(path, limit).decode("utf-8")
        except UnreadableFileError as exc:
            self.problem(variable, f"cannot read {path}: {exc}", fix)
        except UnicodeDecodeError:
            self.problem(variable, f"cannot read {path}: not UTF-8 text", fix)
        return None

    def _text(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value not in (None, "") else None

    def _read(self, declaration: Declaration) -> Any:
        if declaration.only_with is not None and not self.values[declaration.only_with]:
            return copy.copy(declaration.default)
        if declaration.secret:
            raw = self._secret_text(declaration.name)
        else:
            raw = self._text(declaration.name)
        if raw is None:
            return copy.copy(declaration.default)  # a mutable default is never shared
        return declaration.rule.parse(self, declaration, raw)

    def _secret_text(self, name: str) -> str | None:
        """``NAME`` or ``NAME_FILE`` (file content minus one trailing newline), not both."""
        direct = self._text(name)
        file_var = f"{name}_FILE"
        path = self._text(file_var)
        if direct is not None and path is not None:
            self.problem(
                name, f"both {name} and {file_var} are set", f"set only one of {name}, {file_var}"
            )
            return None
        if path is not None:
            content = self.file_text(file_var, path, SECRET_FILE_MAX_BYTES,
                                     "mount the secret file there, readable by this user")
            return content.removesuffix("\n") if content is not None else None
        return direct

