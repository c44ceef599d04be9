"""Per-variable rules: how one variable's text becomes a value, and each refusal's words.

Every rule here looks at one variable only; rules across settings are in
``onerun.settings.checks``. A message names the variable, the rule and the fix, never a
secret value.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path

from onerun.secret import Secret
from onerun.settings.declaration import Declaration, Reading, Rule

ONE_KEY_MIN_LENGTH = 32  # AES-256 key: oned uses its first 32 bytes (src/common/NebulaUtil.cc)
PASSWORD_MAX_BYTES = 256  # oned's core auth driver limit (src/um/User.cc)
_PASSWORD_FORBIDDEN = frozenset('"\\\'')
# oned runs CREATE DATABASE IF NOT EXISTS <name> unquoted (src/sql/MySqlDB.cc), and onedb
# puts DB_NAME and DB_USER unquoted into a shell command line (mysqldump -u USER ... NAME,
# src/onedb/onedb_backend.rb), so MySQL's `$` is left out too. Patterns are used with
# fullmatch: `$` would accept "x\n".
UNQUOTED_IDENTIFIER = re.compile(r"(?![0-9]+\Z)[0-9A-Za-z_]{1,64}")
DB_USER = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
_HOSTISH = re.compile(r"[A-Za-z0-9._:\-\[\]%]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._\-]*[A-Za-z0-9_])?")  # or IPv4
_BRACKETED = re.compile(r"\[([^\[\]]*)\](:[0-9]*)?")
_NAME_AND_PORT = re.compile(r"[^:\[\]]+:[0-9]+")
DIGITS = re.compile(r"[0-9]+")
# A zone member's zone-service address (docs/ha.md).
_HA_ADDRESS = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._\-]*[A-Za-z0-9_])?:[0-9]{1,5}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def text(doc: str) -> Rule:
    """Any text, kept as given; what it must be is checked across settings (``doc``)."""
    return Rule(lambda reading, declaration, raw: raw, doc)


def boolean() -> Rule:
    def parse(reading: Reading, declaration: Declaration, raw: str) -> bool:
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value not in _FALSE:
            reading.problem(declaration.name, f"{value!r} is not a boolean",
                            "use 1 or 0 (true/false)")
        return False

    return Rule(parse, "a boolean: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case")


def integer(low: int, high: int, example: int | None = None) -> Rule:
    """A whole number in ASCII digits; ``example`` (else the default) is shown in the fix."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> int | None:
        if not DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
            shown = example if example is not None else declaration.default
            reading.problem(
                declaration.name,
                f"{raw!r} is not a whole number from {low} to {high}",
                f"set {declaration.name} to digits in that range, e.g. {shown}",
            )
            fallback: int | None = declaration.default
            return fallback
        return int(raw)

    return Rule(parse, f"a whole number (ASCII digits) from {low} to {high}")


def number(low: float, high: float) -> Rule:
    def parse(reading: Reading, declaration: Declaration, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # also rejects nan
            reading.problem(
                declaration.name,
                f"{raw!r} is not a number from {low:g} to {high:g}",
                f"set {declaration.name} to a plain number, e.g. {declaration.default:g}",
            )
            return float(declaration.default)
        return value

    return Rule(parse, f"a number from {low:g} to {high:g} (`12.5` and `1e3` are fine; "
                       "`-1`, `nan`, `inf`, `10s` are not)")


def choice(values: Mapping[str, str], fix: str, doc: str) -> Rule:
    """One of ``values``' keys in any letter case, mapped to its value."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> str:
        value = raw.lower()
        if value not in values:
            reading.problem(declaration.name, f"{value!r} is not supported", fix)
            return str(declaration.default)
        return values[value]

    return Rule(parse, doc)


def pattern(regex: re.Pattern[str], rule: str, fix: str, doc: str) -> Rule:
    """Text ``regex`` matches as a whole; ``rule`` may name the value as ``{value!r}``."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> str:
        if not regex.fullmatch(raw):
            reading.problem(declaration.name, rule.format(value=raw), fix)
            return str(declaration.default)
        return raw

    return Rule(parse, doc)


def password() -> Rule:
    """Rules oned and onedb both accept: oned's core auth driver (src/um/User.cc) and
    template grammar (src/parsers/template_parser.l), and onedb's single-quoted mysqldump
    argument (src/onedb/onedb_backend.rb). The message names the rule only."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> Secret:
        name = declaration.name
        size = len(raw.encode("utf-8", "surrogatepass"))  # lone surrogates: refused below
        fix = f"choose another {name} (allowed: printable characters except quotes and backslash)"
        if not 1 <= size <= PASSWORD_MAX_BYTES:
            reading.problem(name, f"must be 1 to {PASSWORD_MAX_BYTES} bytes", fix)
        if any(ch in _PASSWORD_FORBIDDEN for ch in raw):
            reading.problem(name, "must not contain \", \\ or '", fix)
        if any(ch.isspace() or not ch.isprintable() for ch in raw):
            reading.problem(
                name, "must not contain whitespace, control or other non-printable characters", fix
            )
        if "]]>" in raw:
            reading.problem(name, "must not contain ']]>' (oned's parser reads it as CDATA)", fix)
        return Secret(raw)

    return Rule(parse, "[password rules](#password-rules)")


def one_key() -> Rule:
    def parse(reading: Reading, declaration: Declaration, raw: str) -> Secret:
        fix = "use at least 32 printable characters, e.g. `openssl rand -hex 32`"
        if len(raw) < ONE_KEY_MIN_LENGTH:
            reading.problem(declaration.name,
                            f"must be at least {ONE_KEY_MIN_LENGTH} characters", fix)
        if any(ch.isspace() or not ch.isprintable() for ch in raw):
            reading.problem(
                declaration.name,
                "must not contain whitespace, control or other non-printable characters", fix
            )
        return Secret(raw)

    return Rule(parse, f"at least {ONE_KEY_MIN_LENGTH} characters; no whitespace, control or "
                       "other non-printable characters (oned reads the file's first token)")


def host_or_auto() -> Rule:
    """A host name or address for oned's configs; ``auto`` keeps the packaged value."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> str | None:
        if raw.lower() == "auto":
            return None
        if not _HOSTISH.fullmatch(raw):
            reading.problem(
                declaration.name,
                f"{raw!r} is not a host name or IP address",
                "use a DNS name or an IP address (letters, digits, . - _ : only)",
            )
            return None
        return raw

    return Rule(parse, "empty or `auto` (any case): keep the packaged value; else a host name "
                       "or IP address: letters, digits and `. _ : - [ ] %` only")


def _ipv6(value: str) -> str | None:
    """``value`` as one canonical IPv6 address (lower case, compressed), else None."""
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        return None


def db_host() -> Rule:
    """DB_HOST in the one form every client takes: a DNS name, IPv4, or bare IPv6.

    oned passes SERVER to mysql_real_connect, which resolves it with getaddrinfo
    (src/sql/MySqlDB.cc@7.4): "[::1]" fails there, "::1" works, and so it does for PyMySQL,
    onedb's -S and mariadb-dump's option file. A port belongs in DB_PORT.
    """

    def parse(reading: Reading, declaration: Declaration, value: str) -> str | None:
        name = declaration.name
        bracketed = _BRACKETED.fullmatch(value)
        if _NAME_AND_PORT.fullmatch(value) or (bracketed is not None and bracketed.group(2)):
            reading.problem(name, f"{value!r} contains a port",
                            "put the host alone in DB_HOST and the port in DB_PORT")
            return None
        if bracketed is not None or ":" in value:
            address = _ipv6(bracketed.group(1) if bracketed is not None else value)
            if address is None:
                reading.problem(name, f"{value!r} is not an IPv6 address",
                                "use a DNS name, an IPv4 or an IPv6 address (brackets optional);"
                                " a port goes in DB_PORT")
            return address
        if not _HOST_NAME.fullmatch(value):
            reading.problem(name, f"{value!r} is not a host name or IP address",
                            "use a DNS name or an IP address (letters, digits, . - _ only)")
            return None
        return value

    return Rule(parse, "a DNS name (letters, digits, `. _ -`), an IPv4 or an IPv6 address. IPv6 "
                       "may be written with or without brackets (`[::1]` or `::1`); onerun "
                       "keeps one form, the bare address, everywhere (oned.conf's `DB/SERVER`, "
                       "its own connections, onedb, mariadb-dump), since oned hands `SERVER` to "
                       "the MySQL client library, which does not take brackets. No port: "
                       "`db:3306` is refused, the port goes in `DB_PORT`")


def ip_address() -> Rule:
    def parse(reading: Reading, declaration: Declaration, raw: str) -> str:
        try:
            ipaddress.ip_address(raw)
        except ValueError:
            reading.problem(
                declaration.name,
                f"{raw!r} is not an IP address",
                "use 0.0.0.0 (all IPv4), :: (all) or one address of this pod",
            )
            return str(declaration.default)
        return raw

    return Rule(parse, "one IPv4 or IPv6 address, e.g. `0.0.0.0`, `::`, `10.1.2.3`; no port, "
                       "no name, no brackets")


def service_list(names: tuple[str, ...]) -> Rule:
    """A comma list of ``names`` that includes oned; empty items are ignored."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> frozenset[str] | None:
        chosen = {part.strip() for part in raw.split(",") if part.strip()}
        unknown = sorted(chosen - set(names))
        if unknown:
            reading.problem(
                declaration.name,
                f"unknown service(s) {', '.join(unknown)}",
                f"use names from: {', '.join(names)}",
            )
        if chosen and "oned" not in chosen:
            reading.problem(
                declaration.name, "must include oned", "add oned: every other service needs it"
            )
        return frozenset(chosen & set(names)) or None

    listed = ", ".join(f"`{name}`" for name in names)
    return Rule(parse, f"comma list of {listed}; must include `oned`; spaces and empty items "
                       "are ignored, so an empty list means every service")


def directory(fix: str) -> Rule:
    def parse(reading: Reading, declaration: Declaration, raw: str) -> Path:
        path = Path(raw)
        if not path.is_dir():
            reading.problem(declaration.name, f"{path} is not a directory", fix)
        return path

    return Rule(parse, "must be an existing directory")


def ha_members() -> Rule:
    """Every zone member's address, host:port, each once; an odd number, at least 3."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> tuple[str, ...]:
        name = declaration.name
        members = tuple(part.strip() for part in raw.split(",") if part.strip())
        bad = [m for m in members if not (_HA_ADDRESS.fullmatch(m)
                                          and 1 <= int(m.rpartition(":")[2]) <= 65535)]
        if bad:
            reading.problem(name, f"{', '.join(repr(b) for b in bad)} not host:port",
                            "list every member's zone-service address as host:port, "
                            "comma-separated, e.g. opennebula-0.opennebula-headless:2640")
            return ()
        if len(set(members)) != len(members):
            reading.problem(name, "lists an address twice", "list each member once")
            return ()
        if len(members) < 3 or len(members) % 2 == 0:
            reading.problem(name, f"lists {len(members)} member(s); a Raft zone needs an "
                            "odd number, at least 3, to keep a majority when one fails",
                            "list 3, 5 or 7 members, or unset it for a single front-end")
            return ()
        return members

    return Rule(parse, "comma list of `host:port`, each once; an odd number, at least 3")

