"""The database's state, decided from what oned itself reads at start.

oned reads its version rows (``check_db_version`` in src/nebula/SystemDB.cc, OpenNebula/one)
and bootstraps a database that has none (src/nebula/Nebula.cc); the states and what oned
does with each are in docs/database.md.

The backends (sqlite.py, mysql.py) only collect ``Facts``; the decision lives here once,
so both backends classify alike and the rules can be tested without a database.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field

# oned's version query (SystemDB::check_db_version): the row with the highest oid is current.
VERSION_QUERY = "SELECT version FROM {table} WHERE oid=(SELECT MAX(oid) FROM {table})"
SLAVE_QUERY = (
    "SELECT is_slave FROM local_db_versioning"
    " WHERE oid=(SELECT MAX(oid) FROM local_db_versioning)"
)
USERS_QUERY = "SELECT oid, body FROM user_pool WHERE oid IN (0, 1)"

# Where oned's default *_ENCRYPTED_ATTR live in each table's body (share/etc/oned.conf
# @7.0/@7.4; stored encrypted: src/pool/PoolObjectSQL.cc encrypt). A few of them are enough
# to try a key on (onerun/onekey.py); VMs that are DONE (state 6) are skipped.
ENCRYPTED_ATTRIBUTES = (
    ("user_pool", "", ("TEMPLATE/SSH_PRIVATE_KEY", "TEMPLATE/SSH_PASSPHRASE")),
    ("datastore_pool", "", ("TEMPLATE/RESTIC_PASSWORD", "TEMPLATE/NETAPP_PASS",
                            "TEMPLATE/NETAPP_PASSWORD", "TEMPLATE/PUREFA_API_TOKEN")),
    ("vm_pool", "state <> 6", ("TEMPLATE/CONTEXT/PASSWORD",)),
)
MAX_ENCRYPTED_VALUES = 8  # per table: a key that decrypts one of them is proven

# onerun's record of one_key, in oneadmin's template (onerun/onekey.py).
KEY_FINGERPRINT_PATH = "TEMPLATE/ONERUN_ONE_KEY_FINGERPRINT"

# Any of these means oned has started to bootstrap here (src/nebula/Nebula.cc creates them).
MARKER_TABLES = frozenset(
    {"logdb", "pool_control", "db_versioning", "local_db_versioning", "user_pool",
     "system_attributes"}
)


class DbState(enum.Enum):
    """What oned would do with this database (docs/database.md)."""

    EMPTY = "empty"  # oned bootstraps it
    BOOTSTRAPPED = "bootstrapped"  # both version rows and user 0
    PARTIAL_TABLES = "partial-tables"  # OpenNebula tables, a version row (or user_pool) missing
    PARTIAL_USERS = "partial-users"  # versions present, user 0 missing: oned finishes it
    # Not a classification: the DB could not be read. Only maintenance mode goes on with it
    # (observe.observe); every other start stops with the error itself.
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class DbObservation:
    """What classify saw; ``detail`` is one sentence for the operator, never a secret."""

    state: DbState
    db_version: str | None
    local_db_version: str | None
    oneadmin_password_sha256: str | None
    oneadmin_name: str | None
    serveradmin_present: bool
    is_slave: bool
    tables: frozenset[str]
    detail: str
    # user 1's PASSWORD: sha256 hex of the plain secret in the service auth files
    # (serveradmin's bootstrap, src/um/UserPool.cc in OpenNebula/one)
    serveradmin_password_sha256: str | None = None
    # what was done to read it (an interrupted sqlite transaction rolled back), for the log
    recovery: str | None = None
    # onerun's fingerprint of one_key in oneadmin's template (onerun/onekey.py)
    one_key_fingerprint: str | None = None
    # a few encrypted attribute values to try a key on; read only when asked
    encrypted_values: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Facts:
    """Raw readings of one database; ``None`` means the query failed or found no row."""

    where: str  # "/var/lib/one/one.db" or "database opennebula on db:3306"
    tables: frozenset[str]
    db_version: str | None = None
    local_db_version: str | None = None
    user0_body: str | None = None
    user1_body: str | None = None  # "" for a row with an empty body, None for no row
    is_slave: bool = False
    encrypted_values: tuple[str, ...] = field(default=(), repr=False)


def encrypted_value_queries(tables: frozenset[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(query, XML paths) for each table holding attributes oned encrypts by default."""
    for table, condition, paths in ENCRYPTED_ATTRIBUTES:
        if table not in tables:
            continue
        likes = " OR ".join(f"body LIKE '%<{path.rsplit('/', 1)[1]}>%'" for path in paths)
        where = f"({likes}) AND {condition}" if condition else likes
        # Every part is a constant of this module: nothing from outside reaches the query.
        query = f"SELECT body FROM {table} WHERE {where} LIMIT {MAX_ENCRYPTED_VALUES}"  # noqa: S608
        yield query, paths


def _xml(body: str | None) -> ET.Element | None:
    if not body:
        return None
    try:
        return ET.fromstring(body)  # noqa: S314 - oned wrote it; no DTDs or entities in it
    except ET.ParseError:
        return None


def values_at(body: str | None, paths: tuple[str, ...]) -> list[str]:
    """The non-empty texts at ``paths`` in an object's XML body."""
    root = _xml(body)
    if root is None:
        return []
    found = (root.findtext(path) for path in paths)
    return [text.strip() for text in found if text and text.strip()]


def parse_user_body(body: str | None) -> tuple[str | None, str | None]:
    """(NAME, PASSWORD) of a user_pool body; (None, None) when absent or unreadable."""
    root = _xml(body)
    if root is None:
        return None, None
    name = root.findtext("NAME")
    password = root.findtext("PASSWORD")
    return (name.strip() if name else None), (password.strip() if password else None)


def is_true(value: object) -> bool:
    """is_slave as stored: BOOLEAN is an integer in both backends, maybe a string."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        return value.strip() not in ("", "0")
    return bool(value)


def decide(facts: Facts) -> DbObservation:
    """Turn readings into a state, by the rules in docs/database.md."""
    name, password = parse_user_body(facts.user0_body)
    _, serveradmin_password = parse_user_body(facts.user1_body)
    user0 = facts.user0_body is not None

    def observe(state: DbState, detail: str) -> DbObservation:
        return DbObservation(
            state=state, db_version=facts.db_version, local_db_version=facts.local_db_version,
            oneadmin_password_sha256=password, oneadmin_name=name,
            serveradmin_present=facts.user1_body is not None, is_slave=facts.is_slave,
            tables=facts.tables, detail=detail, serveradmin_password_sha256=serveradmin_password,
            one_key_fingerprint=next(iter(values_at(facts.user0_body, (KEY_FINGERPRINT_PATH,))),
                                     None),
            encrypted_values=facts.encrypted_values,
        )

    markers = facts.tables & MARKER_TABLES
    if not markers:
        others = f" ({len(facts.tables)} other tables)" if facts.tables else ""
        return observe(DbState.EMPTY, f"{facts.where} has no OpenNebula tables{others}")
    missing = [
        f"table {table} is missing" if table not in facts.tables else f"{table} has no version"
        for table, version in (("local_db_versioning", facts.local_db_version),
                               ("db_versioning", facts.db_version))
        if version is None
    ]
    if missing:
        return observe(
            DbState.PARTIAL_TABLES,
            f"{facts.where} has OpenNebula tables ({', '.join(sorted(markers))}) but"
            f" {' and '.join(missing)}: an interrupted bootstrap that oned cannot repeat"
            " over the leftovers",
        )
    versions = f"DB version {facts.db_version}, local DB version {facts.local_db_version}"
    if "user_pool" not in facts.tables:
        # oned would skip the bootstrap (versions match) and then fail on the missing table.
        return observe(DbState.PARTIAL_TABLES,
                       f"{facts.where} has version rows ({versions}) but no table user_pool")
    if not user0:
        return observe(
            DbState.PARTIAL_USERS,
            f"{facts.where} has both version rows ({versions}) but no user 0: the first start"
            " stopped before creating the users (oned finishes this itself)",
        )
    slave = ", federation slave" if facts.is_slave else ""
    return observe(DbState.BOOTSTRAPPED, f"{facts.where} is bootstrapped ({versions}{slave})")
