"""Settings: the environment (and ``*_FILE`` secrets) read once into a frozen object.

Every problem is collected before failing, so an operator fixes them all in one go
(Bitnami's validation style); the message names the variable, the rule and the fix, and
never a secret value. Variable names stay compatible with the community image.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onerun.catalogue import SERVICE_NAMES
from onerun.errors import Problem, SettingsError
from onerun.secret import Secret

DbBackend = Literal["sqlite", "mysql"]
LogFormat = Literal["text", "json"]

SECRET_VARIABLES = ("ONEADMIN_PASSWORD", "DB_PASSWORD", "ONE_KEY")

# ONERUN_CONFIG sections, by the grammar of the file each one overrides.
TEMPLATE_SECTIONS = ("oned", "monitord")
YAML_SECTIONS = ("oneflow", "onegate", "fireedge", "oneform", "onehem", "oneks")

# ONERUN_CONFIG bounds: the packaged YAML configs nest 3 levels deep (7.0, 7.4).
CONFIG_MAX_DEPTH = 32
CONFIG_MAX_VALUES = 100_000

SECRET_FILE_MAX_BYTES = 64 * 1024  # a password holds at most 256 bytes
CONFIG_FILE_MAX_BYTES = 1024 * 1024  # a Kubernetes ConfigMap holds at most 1 MiB

ONE_KEY_MIN_LENGTH = 32  # oned uses the first 32 bytes as an AES-256 key (reference 1.5)
PASSWORD_MAX_BYTES = 256  # oned's core auth driver limit (reference 1.2)
_PASSWORD_FORBIDDEN = frozenset('"\\\'')
# oned runs CREATE DATABASE IF NOT EXISTS <name> unquoted (reference 2.5), and onedb puts
# DB_NAME and DB_USER unquoted into a shell command line (mysqldump -u USER ... NAME), so
# MySQL's `$` is left out too. Patterns are used with fullmatch: `$` would accept "x\n".
_UNQUOTED_IDENTIFIER = re.compile(r"(?![0-9]+\Z)[0-9A-Za-z_]{1,64}")
_DB_USER = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
_HOSTISH = re.compile(r"[A-Za-z0-9._:\-\[\]%]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._\-]*[A-Za-z0-9_])?")  # or IPv4
_BRACKETED = re.compile(r"\[([^\[\]]*)\](:[0-9]*)?")
_NAME_AND_PORT = re.compile(r"[^:\[\]]+:[0-9]+")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_]+")
_DIGITS = re.compile(r"[0-9]+")
# HA (docs/ha.md): a member's zone-service address, a zone server's name and endpoint.
_HA_ADDRESS = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._\-]*[A-Za-z0-9_])?:[0-9]{1,5}")
_HA_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")
_HA_ENDPOINT = re.compile(r"https?://[A-Za-z0-9._\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/\-]*)?")
ONED_DEFAULT_PORT = 2633
HA_ELECTION_TIMEOUT_MS = 2000  # docs/ha.md: failover time measured with these timers
HA_BROADCAST_TIMEOUT_MS = 250
HA_WAIT_TIMEOUT = 600.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class HaSettings:
    """One member of an HA zone (docs/ha.md). Every member lists the same ``members``."""

    members: tuple[str, ...]  # every member's zone-service address host:port, this one's too
    address: str  # this member's zone-service address, one of ``members``
    server_name: str  # this member's NAME in the zone's server pool
    endpoint: str  # this member's oned XML-RPC endpoint as the other members reach it
    oned_port: int  # oned.conf's PORT (ONERUN_CONFIG oned.PORT or the packaged 2633)
    election_timeout_ms: int = HA_ELECTION_TIMEOUT_MS
    broadcast_timeout_ms: int = HA_BROADCAST_TIMEOUT_MS
    wait_timeout: float = HA_WAIT_TIMEOUT

    @property
    def peers(self) -> tuple[str, ...]:
        """The other members' zone-service addresses."""
        return tuple(member for member in self.members if member != self.address)

    @property
    def listen_port(self) -> int:
        return int(self.address.rpartition(":")[2])


@dataclass(frozen=True)
class Settings:
    """Everything onerun was told. Secrets are ``Secret`` objects that print as a mask."""

    oneadmin_password: Secret | None = None
    db_password: Secret | None = None
    one_key: Secret | None = None
    db_backend: DbBackend = "sqlite"
    db_host: str | None = None
    db_port: int = 3306
    db_user: str = "oneadmin"
    db_name: str = "opennebula"
    hostname: str | None = None
    monitor_address: str | None = None
    listen_address: str = "0.0.0.0"  # noqa: S104 - the chart's Service must reach the APIs
    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    db_wait_timeout: float = 300.0
    log_format: LogFormat = "text"
    root: Path | None = None
    services: frozenset[str] | None = None  # None: every installed service
    accept_empty_db: bool = False
    trust_one_key: bool = False  # write ONE_KEY beside a bootstrapped DB nothing proves it for
    ssh_dir: Path | None = None
    maintenance: bool = False
    backup_keep: int = 5  # automatic backups, made before upgrades
    backup_keep_manual: int | None = None  # ``onerun backup``'s; None: never pruned
    upgrade_stop_grace: float = 20.0  # seconds onedb may go on after SIGTERM (docs/upgrades.md)
    ha: HaSettings | None = None  # None: a single front-end, no zone

    def service_enabled(self, name: str) -> bool:
        """Whether the operator selected ``name`` (installation is checked elsewhere)."""
        return self.services is None or name in self.services


class UnreadableFileError(Exception):
    """Why a file named by a setting cannot be used; the message never holds its content."""


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind})"


def read_regular_file(path: str, limit: int) -> bytes:
    """The bytes of ``path`` when it is, after following links, a regular file of at most
    ``limit`` bytes.

    Why: a FIFO blocks the start in open() until a writer comes, and a device such as
    /dev/zero never ends. Links are followed because Kubernetes mounts each secret as
    ``name -> ..data/name`` with ``..data`` a link to the current copy.
    """
    try:
        if reason := _not_regular(os.stat(path).st_mode):  # devices are never opened
            raise UnreadableFileError(reason)
        # O_NONBLOCK: should the path become a FIFO after the check, open() still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFileError(exc.strerror or type(exc).__name__) from exc
    try:
        if reason := _not_regular(os.fstat(fd).st_mode):
            raise UnreadableFileError(reason)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # st_size is not trusted (procfs files report 0)
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFileError(exc.strerror or type(exc).__name__) from exc
    finally:
        os.close(fd)
    if size > limit:
        raise UnreadableFileError(f"larger than {limit} bytes")
    return b"".join(chunks)


class _Collector:
    """Reads variables and records problems instead of raising at the first one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[Problem] = []

    def problem(self, variable: str, rule: str, fix: str) -> None:
        self.problems.append(Problem(variable, rule, fix))

    def text(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value if value not in (None, "") else None

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

    def secret(self, name: str) -> Secret | None:
        """``NAME`` or ``NAME_FILE`` (file content minus one trailing newline), not both."""
        direct = self.environ.get(name)
        file_var = f"{name}_FILE"
        path = self.environ.get(file_var)
        if direct not in (None, "") and path not in (None, ""):
            self.problem(
                name, f"both {name} and {file_var} are set", f"set only one of {name}, {file_var}"
            )
            return None
        if path:
            content = self.file_text(file_var, path, SECRET_FILE_MAX_BYTES,
                                     "mount the secret file there, readable by this user")
            return Secret(content.removesuffix("\n")) if content is not None else None
        return Secret(direct) if direct else None

    def boolean(self, name: str) -> bool:
        raw = self.environ.get(name, "").strip().lower()
        if raw in _TRUE:
            return True
        if raw not in _FALSE:
            self.problem(name, f"{raw!r} is not a boolean", "use 1 or 0 (true/false)")
        return False

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # also rejects nan
            self.problem(
                name,
                f"{raw!r} is not a number from {low:g} to {high:g}",
                f"set {name} to a plain number, e.g. {default:g}",
            )
            return default
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
            self.problem(
                name,
                f"{raw!r} is not a whole number from {low} to {high}",
                f"set {name} to digits in that range, e.g. {default}",
            )
            return default
        return int(raw)


def check_password(collector: _Collector, name: str, secret: Secret | None) -> None:
    """Rules oned and onedb both accept (reference 1.2, 3.2); the message names the rule only."""
    if secret is None:
        return
    value = secret.reveal()
    size = len(value.encode("utf-8", "surrogatepass"))  # lone surrogates: refused below
    fix = f"choose another {name} (allowed: printable characters except quotes and backslash)"
    if not 1 <= size <= PASSWORD_MAX_BYTES:
        collector.problem(name, f"must be 1 to {PASSWORD_MAX_BYTES} bytes", fix)
    if any(ch in _PASSWORD_FORBIDDEN for ch in value):
        collector.problem(name, "must not contain \", \\ or '", fix)
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        collector.problem(
            name, "must not contain whitespace, control or other non-printable characters", fix
        )
    if "]]>" in value:
        collector.problem(name, "must not contain ']]>' (oned's parser reads it as CDATA)", fix)


def _check_one_key(collector: _Collector, secret: Secret | None) -> None:
    if secret is None:
        return
    value = secret.reveal()
    fix = "use at least 32 printable characters, e.g. `openssl rand -hex 32`"
    if len(value) < ONE_KEY_MIN_LENGTH:
        collector.problem("ONE_KEY", f"must be at least {ONE_KEY_MIN_LENGTH} characters", fix)
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        collector.problem(
            "ONE_KEY", "must not contain whitespace, control or other non-printable characters", fix
        )


def _address(collector: _Collector, name: str, *, allow_auto: bool) -> str | None:
    value = collector.text(name)
    if value is None or (allow_auto and value.lower() == "auto"):
        return None
    if not _HOSTISH.fullmatch(value):
        collector.problem(
            name,
            f"{value!r} is not a host name or IP address",
            "use a DNS name or an IP address (letters, digits, . - _ : only)",
        )
        return None
    return value


def _ipv6(text: str) -> str | None:
    """``text`` as one canonical IPv6 address (lower case, compressed), else None."""
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def _db_host(collector: _Collector) -> str | None:
    """DB_HOST in the one form every client takes: a DNS name, IPv4, or bare IPv6.

    oned passes SERVER to mysql_real_connect, which resolves it with getaddrinfo
    (src/sql/MySqlDB.cc@7.4): "[::1]" fails there, "::1" works, and so it does for PyMySQL,
    onedb's -S and mariadb-dump's option file. A port belongs in DB_PORT.
    """
    name = "DB_HOST"
    value = collector.text(name)
    if value is None:
        return None
    bracketed = _BRACKETED.fullmatch(value)
    if _NAME_AND_PORT.fullmatch(value) or (bracketed is not None and bracketed.group(2)):
        collector.problem(name, f"{value!r} contains a port",
                          "put the host alone in DB_HOST and the port in DB_PORT")
        return None
    if bracketed is not None or ":" in value:
        address = _ipv6(bracketed.group(1) if bracketed is not None else value)
        if address is None:
            collector.problem(name, f"{value!r} is not an IPv6 address",
                              "use a DNS name, an IPv4 or an IPv6 address (brackets optional);"
                              " a port goes in DB_PORT")
        return address
    if not _HOST_NAME.fullmatch(value):
        collector.problem(name, f"{value!r} is not a host name or IP address",
                          "use a DNS name or an IP address (letters, digits, . - _ only)")
        return None
    return value


def _listen_address(collector: _Collector) -> str:
    value = collector.text("ONERUN_LISTEN_ADDRESS") or "0.0.0.0"  # noqa: S104
    try:
        ipaddress.ip_address(value)
    except ValueError:
        collector.problem(
            "ONERUN_LISTEN_ADDRESS",
            f"{value!r} is not an IP address",
            "use 0.0.0.0 (all IPv4), :: (all) or one address of this pod",
        )
        return "0.0.0.0"  # noqa: S104
    return value


def _services(collector: _Collector) -> frozenset[str] | None:
    raw = collector.text("ONERUN_SERVICES")
    if raw is None:
        return None
    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(names - set(SERVICE_NAMES))
    if unknown:
        collector.problem(
            "ONERUN_SERVICES",
            f"unknown service(s) {', '.join(unknown)}",
            f"use names from: {', '.join(SERVICE_NAMES)}",
        )
    if names and "oned" not in names:
        collector.problem(
            "ONERUN_SERVICES", "must include oned", "add oned: every other service needs it"
        )
    return frozenset(names & set(SERVICE_NAMES)) or None


class _Unexpandable(Exception):
    """ONERUN_CONFIG's data cannot be turned into plain, finite, shallow values."""


class _Expander:
    """Copies loaded YAML so no mapping or list is shared, bounded in depth and size.

    ruamel writes an object met twice as an anchor and an alias (``&id001``/``*id001``),
    which the Ruby services' YAML loader refuses; so aliases become plain copies here. The
    bounds keep a self-referencing alias or an alias bomb from hanging or exhausting the
    start, and keep every later recursive step (merge, dump) far from Python's limit.
    """

    def __init__(self) -> None:
        self.budget = CONFIG_MAX_VALUES

    def copy(self, value: Any, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Unexpandable(f"expands to more than {CONFIG_MAX_VALUES} values "
                                "(through YAML aliases)")
        if not isinstance(value, dict | list):
            return value
        if depth >= CONFIG_MAX_DEPTH:
            raise _Unexpandable(f"nests deeper than {CONFIG_MAX_DEPTH} levels (or a YAML alias "
                                "refers to itself)")
        if isinstance(value, dict):
            return {key: self.copy(item, depth + 1) for key, item in value.items()}
        return [self.copy(item, depth + 1) for item in value]


def _load_overrides(collector: _Collector, path_text: str | None) -> Mapping[str, Any]:
    """Parse ONERUN_CONFIG into {section: overrides}, checking shape, not values."""
    if path_text is None:
        return {}
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    name = "ONERUN_CONFIG"
    text = collector.file_text(name, path_text, CONFIG_FILE_MAX_BYTES, "mount the file there")
    if text is None:
        return {}
    flatten = "write plain values: the packaged service configs nest 3 levels at most"
    try:
        data = _Expander().copy(YAML(typ="safe", pure=True).load(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        collector.problem(name, f"{path_text} is not valid YAML{where}", "fix the YAML syntax")
        return {}
    except RecursionError:  # the YAML parser itself recurses once per level
        collector.problem(name, f"{path_text} nests too deep to read", flatten)
        return {}
    except _Unexpandable as exc:
        collector.problem(name, f"{path_text} {exc}", flatten)
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        collector.problem(name, "must be a mapping of sections", "write e.g. `oned: {...}`")
        return {}
    sections: dict[str, Any] = {}
    known = TEMPLATE_SECTIONS + YAML_SECTIONS
    for section, body in data.items():
        if section not in known:
            collector.problem(
                name, f"unknown section {section!r}", f"use one of: {', '.join(known)}"
            )
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            collector.problem(
                f"{name}: {section}", "must be a mapping", f"write `{section}: {{KEY: value}}`"
            )
            continue
        if section in TEMPLATE_SECTIONS:
            _check_template_overrides(collector, section, body)
        sections[section] = body
    return sections


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _check_template_overrides(collector: _Collector, section: str, body: dict[Any, Any]) -> None:
    """Keys must be attribute names; values a scalar, a vector (mapping) or a list of them."""
    where = f"ONERUN_CONFIG: {section}"
    for key, value in body.items():
        if not isinstance(key, str) or not _ATTRIBUTE_NAME.fullmatch(key):
            collector.problem(where, f"{key!r} is not an attribute name", "use [A-Za-z0-9_]+")
            continue
        if section == "oned" and key.upper() == "DB":
            collector.problem(
                f"{where}.DB",
                "the DB vector is built by onerun from DB_* variables",
                "remove it and set DB_BACKEND, DB_HOST, DB_PORT, DB_USER, DB_NAME, DB_PASSWORD",
            )
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            ok = _is_scalar(item) or (
                isinstance(item, dict)
                and all(isinstance(k, str) and _ATTRIBUTE_NAME.fullmatch(k) for k in item)
                and all(_is_scalar(v) for v in item.values())
            )
            if not ok:
                collector.problem(
                    f"{where}.{key}",
                    "must be a scalar, a mapping of scalars, or a list of those",
                    "vectors hold only KEY: value pairs",
                )
                break


def _get_key(body: Mapping[Any, Any], name: str) -> Any:
    """Value of attribute ``name`` in ``body``; oned upper-cases names, so ``network`` counts."""
    for key, value in body.items():
        if isinstance(key, str) and key.upper() == name:
            return value
    return None


def _has_key(body: Mapping[Any, Any], name: str) -> bool:
    return any(isinstance(key, str) and key.upper() == name for key in body)


def _db_backend(c: _Collector) -> DbBackend:
    raw = (c.text("DB_BACKEND") or "sqlite").lower()
    if raw in ("mysql", "mariadb"):
        return "mysql"
    if raw != "sqlite":
        c.problem("DB_BACKEND", f"{raw!r} is not supported", "use sqlite, mysql or mariadb")
    return "sqlite"


def _check_override_conflicts(
    c: _Collector, overrides: Mapping[str, Any], hostname: str | None, monitor: str | None
) -> None:
    """An attribute set both by a variable and in ONERUN_CONFIG: which one wins is unclear."""
    if hostname and _has_key(overrides.get("oned", {}), "HOSTNAME"):
        c.problem(
            "OPENNEBULA_HOSTNAME",
            "HOSTNAME is also set in ONERUN_CONFIG's oned section",
            "set it in one place only",
        )
    network = _get_key(overrides.get("monitord", {}), "NETWORK")
    vectors = network if isinstance(network, list) else [network]
    if monitor and any(isinstance(v, dict) and _has_key(v, "MONITOR_ADDRESS") for v in vectors):
        c.problem(
            "OPENNEBULA_MONITOR_ADDRESS",
            "NETWORK/MONITOR_ADDRESS is also set in ONERUN_CONFIG's monitord section",
            "set it in one place only",
        )


def _oned_port(overrides: Mapping[str, Any]) -> int:
    """oned.conf's PORT as rendered: ONERUN_CONFIG's oned.PORT, else the packaged default."""
    value = _get_key(overrides.get("oned", {}), "PORT")
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value) and 1 <= int(value) <= 65535:
        return int(value)
    return ONED_DEFAULT_PORT


def _ha_members(c: _Collector) -> tuple[str, ...]:
    raw = c.text("ONERUN_HA_MEMBERS")
    if raw is None:
        return ()
    members = tuple(part.strip() for part in raw.split(",") if part.strip())
    bad = [m for m in members if not (_HA_ADDRESS.fullmatch(m)
                                      and 1 <= int(m.rpartition(":")[2]) <= 65535)]
    if bad:
        c.problem("ONERUN_HA_MEMBERS", f"{', '.join(repr(b) for b in bad)} not host:port",
                  "list every member's zone-service address as host:port, comma-separated, "
                  "e.g. opennebula-0.opennebula-headless:2640")
        return ()
    if len(set(members)) != len(members):
        c.problem("ONERUN_HA_MEMBERS", "lists an address twice", "list each member once")
        return ()
    if len(members) < 3 or len(members) % 2 == 0:
        c.problem("ONERUN_HA_MEMBERS", f"lists {len(members)} member(s); a Raft zone needs an "
                  "odd number, at least 3, to keep a majority when one fails",
                  "list 3, 5 or 7 members, or unset it for a single front-end")
        return ()
    return members


def _ha(c: _Collector, overrides: Mapping[str, Any], password: Secret | None,
        one_key: Secret | None, backend: DbBackend) -> HaSettings | None:
    """ONERUN_HA_*: unset ONERUN_HA_MEMBERS means no zone, and the rest is ignored."""
    members = _ha_members(c)
    if not members:
        return None
    if backend != "sqlite":
        c.problem("ONERUN_HA_MEMBERS", "an HA zone runs on sqlite only in this release (one "
                  "database per member on MariaDB is designed, not built: docs/ha.md)",
                  "use DB_BACKEND=sqlite for an HA zone, or unset ONERUN_HA_MEMBERS")
    address = c.text("ONERUN_HA_ADDRESS")
    if address is None or address not in members:
        c.problem("ONERUN_HA_ADDRESS", f"{address!r} is not one of ONERUN_HA_MEMBERS",
                  "set it to this member's own entry of ONERUN_HA_MEMBERS")
        return None
    host = address.rpartition(":")[0]
    name = c.text("ONERUN_HA_SERVER_NAME") or c.text("POD_NAME") or host.partition(".")[0]
    if not _HA_SERVER_NAME.fullmatch(name):
        c.problem("ONERUN_HA_SERVER_NAME", f"{name!r} is not a valid server name",
                  "use up to 128 of [A-Za-z0-9._-], e.g. the pod's name")
    port = _oned_port(overrides)
    endpoint = c.text("ONERUN_HA_ENDPOINT") or f"http://{host}:{port}/RPC2"
    if not _HA_ENDPOINT.fullmatch(endpoint):
        c.problem("ONERUN_HA_ENDPOINT", f"{endpoint!r} is not an http(s)://host:port/path URL",
                  "set the URL the other members reach this oned's XML-RPC API by, e.g. "
                  f"http://{host}:{port}/RPC2")
    election = c.integer("ONERUN_HA_ELECTION_TIMEOUT_MS", HA_ELECTION_TIMEOUT_MS, 500, 60000)
    broadcast = c.integer("ONERUN_HA_BROADCAST_TIMEOUT_MS", HA_BROADCAST_TIMEOUT_MS, 50, 10000)
    if broadcast * 4 > election:
        c.problem("ONERUN_HA_BROADCAST_TIMEOUT_MS", f"{broadcast} ms is more than a quarter of "
                  f"ONERUN_HA_ELECTION_TIMEOUT_MS ({election} ms): followers would start "
                  "elections between two heartbeats", "keep heartbeats at most a quarter of "
                  "the election timeout, e.g. 250 and 2000")
    raft = _get_key(overrides.get("oned", {}), "RAFT")
    for variable, key in (("ONERUN_HA_ELECTION_TIMEOUT_MS", "ELECTION_TIMEOUT_MS"),
                          ("ONERUN_HA_BROADCAST_TIMEOUT_MS", "BROADCAST_TIMEOUT_MS")):
        if isinstance(raft, dict) and _has_key(raft, key):
            c.problem(variable, f"RAFT/{key} is also set in ONERUN_CONFIG's oned section",
                      f"set it in {variable} only")
    if _has_key(overrides.get("oned", {}), "FEDERATION"):
        c.problem("ONERUN_CONFIG: oned.FEDERATION", "onerun sets FEDERATION/SERVER_ID from the "
                  "zone when ONERUN_HA_MEMBERS is set", "remove FEDERATION from ONERUN_CONFIG")
    for variable, given in (("ONEADMIN_PASSWORD", password), ("ONE_KEY", one_key)):
        if given is None:
            c.problem(variable, "is required when ONERUN_HA_MEMBERS is set: every member must "
                      "use the same one (docs/ha.md)", f"set {variable}(_FILE) from the Secret "
                      "every member mounts")
    return HaSettings(
        members=members, address=address, server_name=name, endpoint=endpoint,
        oned_port=port, election_timeout_ms=election, broadcast_timeout_ms=broadcast,
        wait_timeout=c.number("ONERUN_HA_WAIT_TIMEOUT", HA_WAIT_TIMEOUT, 0, 86400),
    )


def load_settings(environ: Mapping[str, str], root: str | Path | None = None) -> Settings:
    """Build Settings from ``environ``; raise SettingsError listing every problem."""
    c = _Collector(environ)

    oneadmin_password = c.secret("ONEADMIN_PASSWORD")
    db_password = c.secret("DB_PASSWORD")
    one_key = c.secret("ONE_KEY")
    check_password(c, "ONEADMIN_PASSWORD", oneadmin_password)
    check_password(c, "DB_PASSWORD", db_password)
    _check_one_key(c, one_key)

    backend = _db_backend(c)
    db_host = _db_host(c)
    if backend == "mysql" and db_host is None and c.text("DB_HOST") is None:
        c.problem("DB_HOST", "is required when DB_BACKEND=mysql", "set it to the server's name")
    db_port = c.integer("DB_PORT", 3306, 1, 65535)
    db_user = c.text("DB_USER") or "oneadmin"
    if not _DB_USER.fullmatch(db_user):
        c.problem(
            "DB_USER",
            f"{db_user!r} is not a valid user name (onedb passes it unquoted to a shell)",
            "use up to 80 of [A-Za-z0-9_.-]",
        )
    db_name = c.text("DB_NAME") or "opennebula"
    if not _UNQUOTED_IDENTIFIER.fullmatch(db_name):
        c.problem(
            "DB_NAME",
            f"{db_name!r} is not valid as an unquoted MySQL name (oned and onedb do not quote it)",
            "use up to 64 of [A-Za-z0-9_], not only digits",
        )
    password_given = c.text("DB_PASSWORD") is not None or c.text("DB_PASSWORD_FILE") is not None
    if backend == "mysql" and not password_given:
        c.problem("DB_PASSWORD", "is required when DB_BACKEND=mysql", "set DB_PASSWORD(_FILE)")

    hostname = _address(c, "OPENNEBULA_HOSTNAME", allow_auto=True)
    monitor_address = _address(c, "OPENNEBULA_MONITOR_ADDRESS", allow_auto=True)
    listen_address = _listen_address(c)

    config_path = c.text("ONERUN_CONFIG")
    overrides = _load_overrides(c, config_path)
    _check_override_conflicts(c, overrides, hostname, monitor_address)

    log_format_raw = (c.text("ONERUN_LOG_FORMAT") or "text").lower()
    log_format: LogFormat = "json" if log_format_raw == "json" else "text"
    if log_format_raw not in ("text", "json"):
        c.problem("ONERUN_LOG_FORMAT", f"{log_format_raw!r} is not supported", "use text or json")

    ssh_dir_raw = c.text("ONERUN_SSH_DIR")
    ssh_dir = Path(ssh_dir_raw) if ssh_dir_raw else None
    if ssh_dir is not None and not ssh_dir.is_dir():
        c.problem("ONERUN_SSH_DIR", f"{ssh_dir} is not a directory", "mount the SSH key secret")

    root_raw = root if root is not None else c.text("ONERUN_ROOT")
    settings = Settings(
        oneadmin_password=oneadmin_password,
        db_password=db_password,
        one_key=one_key,
        db_backend=backend,
        db_host=db_host,
        db_port=db_port,
        db_user=db_user,
        db_name=db_name,
        hostname=hostname,
        monitor_address=monitor_address,
        listen_address=listen_address,
        config_file=Path(config_path) if config_path else None,
        overrides=overrides,
        db_wait_timeout=c.number("ONERUN_DB_WAIT_TIMEOUT", 300.0, 0, 86400),
        log_format=log_format,
        root=Path(root_raw).resolve() if root_raw else None,
        services=_services(c),
        accept_empty_db=c.boolean("ONERUN_ACCEPT_EMPTY_DB"),
        trust_one_key=c.boolean("ONERUN_TRUST_ONE_KEY"),
        ssh_dir=ssh_dir,
        maintenance=c.boolean("ONERUN_MAINTENANCE"),
        backup_keep=c.integer("ONERUN_BACKUP_KEEP", 5, 1, 1000),
        backup_keep_manual=(c.integer("ONERUN_BACKUP_KEEP_MANUAL", 10, 1, 1000)
                            if c.text("ONERUN_BACKUP_KEEP_MANUAL") is not None else None),
        upgrade_stop_grace=c.number("ONERUN_UPGRADE_STOP_GRACE", 20.0, 0, 3600),
        ha=_ha(c, overrides, oneadmin_password, one_key, backend),
    )
    if c.problems:
        raise SettingsError(c.problems)
    return settings
