"""OpenNebula's template grammar (oned.conf, monitord.conf): parse, edit in place, write back.

Why not sed or a regex: oned takes the FIRST occurrence of a single-valued key, so an
appended override is ignored, and a quote or backslash in a value silently corrupts the
file. This module reads text exactly as oned's flex/bison parser does
(src/parsers/template_parser.l, template_syntax.y in OpenNebula/one; the first occurrence
wins in include/Template.h; docs/configuration-engine.md), keeps every comment,
blank line and byte of layout it does not edit, and refuses values oned could not read back.

An unmodified document dumps back byte for byte; an edited attribute is rewritten whole
where it stood (a vector is always written complete).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

Scalar = str | int | float | bool
Value = str | dict[str, str]
NewValue = Scalar | Mapping[str, Scalar]

# Token patterns of template_parser.l ([[:blank:]] is space or tab; C locale [[:alnum:]]).
_COMMENT = re.compile(r"[ \t]*#[^\n]*\n")
_SPACE = re.compile(r"[ \t\n]+")
_VARIABLE = re.compile(r"[A-Za-z0-9_]+")
_EQUAL = re.compile(r"[ \t]*=[ \t]*")
_EQUAL_EMPTY = re.compile(r"[ \t]*=[ \t]*\n")
_COMMA = re.compile(r"[ \t\n]*,[ \t\n]*")
_CBRACKET = re.compile(r"[ \t\n]*\][ \t\n]*")
_OBRACKET = re.compile(r"[ \t]*\[[ \t\n]*")
_CDATA = re.compile(r"[^\n]*\]\]>[^\n]*")
_UNQUOTED = re.compile(r"[^=#\s,\[\]]+")
# What we are willing to write without quotes (a subset of _UNQUOTED that needs no thought).
_SAFE_UNQUOTED = re.compile(r"^-?[A-Za-z0-9_.:/+]+$")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class TemplateSyntaxError(ValueError):
    """The text is not something oned's parser accepts."""

    def __init__(self, message: str, line: int) -> None:
        self.line = line
        super().__init__(f"{message} at line {line}")


class UnwritableValueError(ValueError):
    """A value oned could not read back. Names the attribute, never the value (a password?)."""

    def __init__(self, attribute: str, rule: str) -> None:
        self.attribute = attribute
        self.rule = rule
        super().__init__(f"value of {attribute} cannot be written to oned's template: {rule}")


@dataclass
class _Token:
    kind: str
    start: int
    end: int
    value: str = ""
    quoted: bool = False


@dataclass
class Attribute:
    """One top-level attribute: its parsed value and the exact source text it came from.

    ``style`` records, per vector key (or "" for a single value), whether the value was
    written without quotes, so a rewrite keeps the packaged file's style.
    """

    name: str
    value: Value
    text: str
    style: dict[str, bool] = field(default_factory=dict)

    @property
    def is_vector(self) -> bool:
        return isinstance(self.value, dict)


Node = str | Attribute  # str: comments, blank lines and separators, kept verbatim


def canonical(name: str) -> str:
    """The name oned stores: upper-cased (Attribute.h)."""
    return name.upper()


def _unescape(body: str) -> str:
    """template_syntax.y's unescape: only the 2-char sequence backslash-quote becomes a quote."""
    return body.replace('\\"', '"')


def _quoted_end(text: str, pos: int) -> int | None:
    """End of the longest ``"([^"]|\\")*"`` match at ``pos`` (flex takes the longest match).

    A quote preceded by a backslash may be body or terminator; any other quote ends the body.
    """
    if pos >= len(text) or text[pos] != '"':
        return None
    best: int | None = None
    i = pos + 1
    while True:
        j = text.find('"', i)
        if j < 0:
            return best
        best = j + 1
        if text[j - 1] != "\\" or j - 1 < pos + 1:
            return best
        i = j + 1


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _value_token(text: str, pos: int) -> _Token:
    """One token in flex's VALUE state: longest match wins, the earlier rule breaks a tie."""
    candidates: list[tuple[int, str]] = []
    for kind, pattern in (("OBRACKET", _OBRACKET), ("CDATA", _CDATA)):
        match = pattern.match(text, pos)
        if match:
            candidates.append((match.end(), kind))
    quoted = _quoted_end(text, pos)
    if quoted is not None:
        candidates.append((quoted, "QUOTED"))
    match = _UNQUOTED.match(text, pos)
    if match:
        candidates.append((match.end(), "STRING"))
    if not candidates:
        raise TemplateSyntaxError("expected a value", _line(text, pos))
    end = max(end for end, _ in candidates)
    kind = next(kind for e, kind in candidates if e == end)
    if kind == "CDATA":
        raise TemplateSyntaxError("']]>' in a value aborts oned's parser", _line(text, pos))
    if kind == "QUOTED":
        return _Token("STRING", pos, end, _unescape(text[pos + 1 : end - 1]), True)
    if kind == "STRING":
        return _Token("STRING", pos, end, _unescape(text[pos:end]))
    return _Token(kind, pos, end)


_INITIAL_RULES = (
    ("COMMENT", _COMMENT), ("SPACE", _SPACE), ("VARIABLE", _VARIABLE), ("EQUAL", _EQUAL),
    ("EQUAL_EMPTY", _EQUAL_EMPTY), ("COMMA", _COMMA), ("CBRACKET", _CBRACKET),
)


def _tokens(text: str) -> Iterator[_Token]:
    """The token stream of template_parser.l, with flex's two states (INITIAL and VALUE)."""
    pos = 0
    in_value = False
    while pos < len(text):
        if in_value:
            token = _value_token(text, pos)
            in_value = False
            pos = token.end
            yield token
            continue
        best: tuple[int, str] | None = None
        for kind, pattern in _INITIAL_RULES:
            match = pattern.match(text, pos)
            if match and (best is None or match.end() > best[0]):
                best = (match.end(), kind)
        if best is None:
            raise TemplateSyntaxError(f"unexpected character {text[pos]!r}", _line(text, pos))
        end, kind = best
        in_value = kind == "EQUAL"
        if kind not in ("COMMENT", "SPACE"):
            yield _Token(kind, pos, end, text[pos:end])
        pos = end


class _Parser:
    """The grammar of template_syntax.y over the token stream, recording source spans."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(_tokens(text))
        self.index = 0

    def _next(self, *kinds: str) -> _Token:
        if self.index >= len(self.tokens):
            raise TemplateSyntaxError(f"unexpected end, expected {'/'.join(kinds)}",
                                      _line(self.text, len(self.text)))
        token = self.tokens[self.index]
        if token.kind not in kinds:
            raise TemplateSyntaxError(f"expected {'/'.join(kinds)}, found {token.kind}",
                                      _line(self.text, token.start))
        self.index += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.index].kind if self.index < len(self.tokens) else None

    def attributes(self) -> Iterator[tuple[int, int, Attribute]]:
        while self.index < len(self.tokens):
            name = self._next("VARIABLE")
            equal = self._next("EQUAL", "EQUAL_EMPTY")
            if equal.kind == "EQUAL_EMPTY":
                end = self.text.index("=", equal.start) + 1  # the newline stays layout
                yield name.start, end, Attribute(canonical(name.value), "",
                                                 self.text[name.start:end])
                continue
            value = self._next("STRING", "OBRACKET")
            if value.kind == "STRING":
                yield name.start, value.end, Attribute(
                    canonical(name.value), value.value, self.text[name.start:value.end],
                    {"": not value.quoted},
                )
                continue
            vector: dict[str, str] = {}
            style: dict[str, bool] = {}
            if self._peek() != "CBRACKET":
                while True:
                    key = canonical(self._next("VARIABLE").value)
                    self._next("EQUAL")
                    item = self._next("STRING")
                    if key not in vector:  # std::map::insert keeps the first
                        vector[key] = item.value
                        style[key] = not item.quoted
                    if self._peek() != "COMMA":
                        break
                    self._next("COMMA")
            close = self._next("CBRACKET")
            end = self.text.index("]", close.start) + 1
            yield name.start, end, Attribute(canonical(name.value), vector,
                                             self.text[name.start:end], style)


class Document:
    """An ordered template document: attributes and the verbatim text between them."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    # ----------------------------------------------------------------- reading
    def dump(self) -> str:
        return "".join(node if isinstance(node, str) else node.text for node in self.nodes)

    def attributes(self, name: str | None = None) -> list[Attribute]:
        """Every attribute in file order, or every occurrence of ``name``."""
        wanted = canonical(name) if name is not None else None
        return [n for n in self.nodes
                if isinstance(n, Attribute) and (wanted is None or n.name == wanted)]

    def get(self, name: str) -> Value | None:
        """The value oned uses: the first occurrence (Template.h ``__get``)."""
        found = self.attributes(name)
        return found[0].value if found else None

    def get_all(self, name: str) -> list[Value]:
        return [attribute.value for attribute in self.attributes(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.attributes(name))

    # ----------------------------------------------------------------- editing
    def set(self, name: str, value: NewValue) -> None:
        """Replace ``name`` in place (later duplicates dropped), or add it at the end."""
        self.set_all(name, [value])

    def merge_vector(self, name: str, updates: Mapping[str, Scalar]) -> None:
        """Merge ``updates`` into the (first) vector ``name``, keeping its other keys."""
        current = self.get(name)
        if current is not None and not isinstance(current, dict):
            raise TypeError(f"{canonical(name)} is a single value in this file, not a vector")
        merged: dict[str, Scalar] = dict(current or {})
        for key, item in updates.items():
            merged[canonical(key)] = item
        self.set(name, merged)

    def set_all(self, name: str, values: Sequence[NewValue]) -> None:
        """Replace every occurrence of ``name`` with ``values``, written where the first stood."""
        key = canonical(name)
        if not _NAME.match(key):
            raise ValueError(f"{name!r} is not an attribute name ([A-Za-z0-9_]+)")
        style: dict[str, bool] = {}
        for old in reversed(self.attributes(key)):  # the first occurrence's style wins
            style.update(old.style)
        texts = [format_attribute(key, value, style) for value in values]
        new = [parse(text).attributes()[0] for text in texts]
        self._place(key, new)

    def set_text(self, name: str, text: str) -> None:
        """Replace ``name`` with a ready-made fragment (a Jinja2 rendering), checked by parsing."""
        parsed = parse(text).attributes()
        if len(parsed) != 1 or parsed[0].name != canonical(name):
            raise ValueError(f"fragment for {canonical(name)} must hold exactly that attribute")
        parsed[0].text = parsed[0].text.strip()
        self._place(canonical(name), parsed)

    def remove(self, name: str) -> None:
        self._place(canonical(name), [])

    def _place(self, key: str, new: list[Attribute]) -> None:
        positions = [i for i, node in enumerate(self.nodes)
                     if isinstance(node, Attribute) and node.name == key]
        if not positions:
            if not new:
                return
            tail = self.dump()
            if tail and not tail.endswith("\n"):
                self.nodes.append("\n")
            for attribute in new:
                self.nodes.extend([attribute, "\n"])
            return
        first = positions[0]
        joined: list[Node] = []
        for i, attribute in enumerate(new):
            if i:
                joined.append("\n\n")
            joined.append(attribute)
        for index in reversed(positions[1:]):
            self._delete_line(index)
        self.nodes[first:first + 1] = joined
        if not joined:
            self._delete_line(first)

    def _delete_line(self, index: int) -> None:
        """Remove a node; when it filled whole lines, remove its line break too."""
        del self.nodes[index]
        before = self.nodes[index - 1] if index > 0 else "\n"
        after = self.nodes[index] if index < len(self.nodes) else None
        if (isinstance(before, str) and before.endswith("\n")
                and isinstance(after, str) and after.startswith("\n")):
            self.nodes[index] = after[1:]


def parse(text: str) -> Document:
    """Parse template text; raises TemplateSyntaxError where oned's parser would fail."""
    nodes: list[Node] = []
    pos = 0
    for start, end, attribute in _Parser(text).attributes():
        nodes.append(text[pos:start])
        nodes.append(attribute)
        pos = end
    nodes.append(text[pos:])
    return Document([node for node in nodes if not (isinstance(node, str) and node == "")])


# --------------------------------------------------------------------- writing values
def _as_text(name: str, value: Scalar) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name}: unsupported value type {type(value).__name__}")


def quote(name: str, value: str) -> str:
    """``value`` as a quoted template string that oned reads back exactly.

    ``name`` only labels the error: the value is never put in a message (it may be a password).
    """
    if "]]>" in value:
        raise UnwritableValueError(name, "it contains ']]>', which aborts oned's parser")
    if value.endswith("\\"):
        raise UnwritableValueError(
            name, "it ends with a backslash, which oned reads as an escaped closing quote"
        )
    if "\0" in value:
        raise UnwritableValueError(name, "it contains a NUL character")
    return '"' + value.replace('"', '\\"') + '"'


def format_value(name: str, value: Scalar, unquoted: bool | None = None) -> str:
    """One value: unquoted when the packaged file wrote it so (or, new, it is a number) and safe.

    Quoting never changes what oned reads; keeping the packaged style keeps diffs small.
    """
    text = _as_text(name, value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    plain = unquoted if unquoted is not None else is_number
    if plain and _SAFE_UNQUOTED.match(text):
        return text
    return quote(name, text)


def format_attribute(name: str, value: NewValue, style: Mapping[str, bool] | None = None) -> str:
    """``NAME = value`` or a complete multi-line vector, in the packaged file's quoting style."""
    style = style or {}
    key = canonical(name)
    if isinstance(value, Mapping):
        keys = [canonical(sub) for sub in value]
        width = max((len(sub_key) for sub_key in keys), default=0)
        items = []
        for sub_key, item in zip(keys, value.values(), strict=True):
            if not _NAME.match(sub_key):
                raise ValueError(f"{key}/{sub_key} is not an attribute name ([A-Za-z0-9_]+)")
            rendered = format_value(f"{key}/{sub_key}", item, style.get(sub_key))
            items.append(f"    {sub_key:<{width}} = {rendered}")
        if not items:
            return f"{key} = [ ]"
        return f"{key} = [\n" + ",\n".join(items) + "\n]"
    return f"{key} = {format_value(key, value, style.get(''))}"
