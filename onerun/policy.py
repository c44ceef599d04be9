"""The policy: a pure function from (Settings, Observation) to what start must do, or a refusal.

``decide`` runs the steps of a start in order (``_steps``). Each step reads the observation,
and the settings and layout it needs, and returns one ``Step``: its actions, or a refusal.
The first refusal ends the decision. The rules follow how oned bootstraps and fails
(src/nebula/Nebula.cc, src/nebula/SystemDB.cc and src/um/UserPool.cc in OpenNebula/one);
docs/start.md lists them. No I/O happens here: the fault matrix is a table test of
``decide`` (tests/unit/test_policy.py).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from onerun.catalogue import SERVICE_AUTH_FILES, SERVICE_NAMES
from onerun.database import DbState, backend_for
from onerun.layout import Layout
from onerun.marker import bootstrap_record
from onerun.observe import Observation
from onerun.onekey import prove_key
from onerun.plan import (
    Action,
    Check,
    EnsureDirectory,
    EnsureFileOwner,
    Refusal,
    RemoveFile,
    ReplaceTree,
    WriteFile,
)
from onerun.runtime.services import service_auth_files_for
from onerun.secret import Secret
from onerun.settings import ONE_KEY_MIN_LENGTH, Settings
from onerun.sshkeys import CopyFile, CopySshKeys, GenerateSshKey
from onerun.versions import Version

# Letters and digits plus punctuation that oned, onedb and oned.conf all accept: oned.conf's
# quoted values end at '"' and take '\"' as an escape, and "]]>" aborts the parse
# (src/parsers/template_parser.l in OpenNebula/one); onedb quotes the password in '...' for
# mysqldump (src/onedb/onedb_backend.rb); oned refuses whitespace in a password
# (src/um/User.cc). So: no quotes, backslash, whitespace; "]]>" cannot form without ">".
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.,+=@%"
GENERATED_PASSWORD_LENGTH = 32


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


@dataclass(frozen=True)
class Upgrade:
    """The DB is older than the image: back up, run onedb upgrade, verify."""

    db_version: str
    target_version: str


@dataclass(frozen=True)
class Decision:
    """What the policy decided. ``refusal`` set: nothing is to be changed, no flag is set,
    and ``actions`` are those of the steps before it (the plan shows them)."""

    actions: list[Action] = field(default_factory=list)
    refusal: Refusal | None = None
    upgrade: Upgrade | None = None
    heal_service_auth: bool = False
    record_start: tuple[str | None, str | None] | None = None
    record_key_fingerprint: bool = False  # post-start records it in oneadmin's template


@dataclass(frozen=True)
class Step:
    """What one step of a start decides: its actions, or a refusal (which decides nothing
    else). Besides actions a step can ask for a schema upgrade or for post-start to heal
    the service auth files."""

    actions: list[Action] = field(default_factory=list)
    refusal: Refusal | None = None
    upgrade: Upgrade | None = None
    heal_service_auth: bool = False

    def __post_init__(self) -> None:
        if self.refusal is not None and (self.actions or self.upgrade or self.heal_service_auth):
            raise ValueError("a step that refuses decides nothing else")

    @staticmethod
    def refuse(reason: str, fix: str) -> Step:
        return Step(refusal=Refusal(reason, fix))


def decide(
    settings: Settings,
    obs: Observation,
    layout: Layout,
    new_password: Callable[[], str] = generate_password,
) -> Decision:
    """Decide what start does: its steps in order, up to the first refusal. Maintenance mode
    then trims the decision (``_for_maintenance``)."""
    decision = _until_refusal(_steps(settings, obs, layout, new_password), obs)
    return _for_maintenance(decision, obs, layout) if settings.maintenance else decision


def _steps(settings: Settings, obs: Observation, layout: Layout,
           new_password: Callable[[], str]) -> Iterator[Step]:
    """The steps of a start, in the order it runs them. Each decides from the observation
    alone, never from another step's result; a step that does not apply to the database's
    state decides nothing. Lazy: no step after a refusal is evaluated."""
    yield _directories(layout)
    yield _image_notes(obs, layout)
    yield _preconditions(settings, obs, layout)
    yield _hostname(obs)
    yield _database_check(obs)
    yield _database_state(settings, obs, layout)
    yield _bootstrap_record(settings, obs, layout)
    yield _fix_owners(settings, obs, layout)
    yield _one_key(settings, obs, layout)
    yield _versions(obs)
    yield _bootstrap_auth(settings, obs, layout, new_password)
    yield _bootstrapped_auth(settings, obs, layout)
    yield _service_auth(settings, obs, layout)
    yield _no_running_oned(obs)
    yield _stale_lock(obs, layout)
    yield _remotes(obs, layout)
    yield _ssh(settings, obs, layout)
    yield _maintenance_flag(settings, layout)


def _until_refusal(steps: Iterator[Step], obs: Observation) -> Decision:
    """The steps' actions in order; the first refusal ends the decision with the actions
    before it. A start that is not refused records what it ran (post-start)."""
    actions: list[Action] = []
    upgrade: Upgrade | None = None
    heal_service_auth = False
    for step in steps:
        if step.refusal is not None:
            return Decision(actions=actions, refusal=step.refusal)
        actions.extend(step.actions)
        upgrade = step.upgrade or upgrade
        heal_service_auth = heal_service_auth or step.heal_service_auth
    return Decision(
        actions=actions,
        upgrade=upgrade,
        heal_service_auth=heal_service_auth,
        record_start=(
            _text(obs.image.versions.release),
            upgrade.target_version if upgrade
            else obs.db.db_version or _text(obs.image.versions.db_version),
        ),
        # A federation slave shares its master's users: the master records it there.
        record_key_fingerprint=obs.db.one_key_fingerprint is None and not obs.db.is_slave,
    )


def _text(version: Version | None) -> str | None:
    return str(version) if version is not None else None


def _directories(layout: Layout) -> Step:
    """What oned needs on the volume and at runtime, one directory at a time (never -R).

    /etc/one is rendered's (render.py), /var/log/one and /run/onerun supervisord's
    (supervisor.py): each directory has one owner module.
    """
    return Step([
        EnsureDirectory(layout.var_lib_one, None, why="oneadmin's home and the volume"),
        EnsureDirectory(layout.dot_one, 0o700, why="one_key, one_auth, service auth files"),
        EnsureDirectory(layout.ssh_dir, 0o700, why="oneadmin's SSH key for the hypervisors"),
        EnsureDirectory(layout.state_dir, 0o700, why="onerun's record of the last start"),
        EnsureDirectory(layout.run_one, 0o750, why="oned runtime files"),
        EnsureDirectory(layout.ssh_socks, 0o700, why="SSH control sockets of the drivers"),
        EnsureDirectory(layout.lock_dir, 0o755, why="oned's lock file"),
    ])


def _image_notes(obs: Observation, layout: Layout) -> Step:
    """What the image lacks (a bare test or demo root): said in the plan, not refused."""
    notes: list[Action] = []
    if obs.image.versions.release is None:
        notes.append(Check("image version", "skipped",
                           f"neither {layout.opennebula_version_rb} (7.2+) nor "
                           f"{layout.opennebula_rb} (7.0) holds VERSION: OpenNebula's release "
                           "is unknown"))
    else:
        notes.append(Check("image version", "ok",
                           f"the image runs OpenNebula {obs.image.versions.release}"))
    absent = [name for name in SERVICE_NAMES if name not in obs.image.installed_services]
    if absent:
        notes.append(Check("services", "note",
                           f"not installed under {layout.root}: {', '.join(absent)}; "
                           "supervisord runs only what is installed"))
    return Step(notes)


def _preconditions(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """Reasons not to look any further: an unknown DB state, an unwritable volume."""
    if obs.volume.restore_failed:
        return Step.refuse(
            "a schema upgrade or its restore did not complete, so the database state is "
            f"unknown: {obs.volume.restore_failed}",
            "start in maintenance mode (ONERUN_MAINTENANCE=1), check the database's versions "
            "(`onedb version`), then run `onerun restore FILE` with the backup named in "
            f"{layout.restore_failed_marker}, or remove that file if the upgrade did complete")
    if not obs.processes.var_lib_one_writable_by_oneadmin:
        return Step.refuse(
            f"{layout.var_lib_one} is not writable by this user",
            "give the volume to uid 9869 (the chart sets fsGroup: 9869) or run as root once")
    if (backend_for(settings).stored_on_volume
            and not obs.processes.sqlite_db_writable_by_oneadmin):
        return Step.refuse(
            f"{layout.sqlite_db} is not writable by this user",
            "give the file to uid 9869 (e.g. `chown 9869:9869 one.db`) or run as root once")
    return Step()


def _hostname(obs: Observation) -> Step:
    """oned exits at start when the system hostname does not resolve and oned.conf sets no
    HOSTNAME (observe.HostnameFact): refuse first, naming the name and the fix."""
    fact = obs.hostname
    if fact is None:
        return Step()
    if fact.configured is not None:
        return Step([Check(
            "hostname", "ok", f"oned.conf's HOSTNAME is {fact.configured}: oned looks no name "
                              "up at start (hypervisors must reach it by that name)")])
    if fact.error is None:
        return Step([Check(
            "hostname", "ok", f"the system hostname {fact.system} resolves to "
                              f"{fact.canonical}, which oned will use as HOSTNAME")])
    return Step.refuse(
        f"the container's hostname {fact.system!r} does not resolve ({fact.error}); "
        "oned.conf sets no HOSTNAME, so oned would look it up at start and exit",
        "set OPENNEBULA_HOSTNAME to the name or address the hypervisors reach this "
        f"front-end by (oned then looks nothing up), or make {fact.system} resolvable "
        f"in the container: `docker run --add-host {fact.system}:<address>`, or a "
        "hostAliases entry in the pod spec (onerun never edits /etc/hosts)")


def _database_check(obs: Observation) -> Step:
    """The database's state, as the plan shows it."""
    return Step([Check("database", "ok", f"{obs.db.state.name}: {obs.db.detail}")])


def _database_state(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """DB states no start may proceed on: unreadable, half-bootstrapped, or unexpectedly empty."""
    state = obs.db.state
    if state is DbState.UNREADABLE:  # only maintenance mode observes this
        return Step.refuse(f"the database could not be read: {obs.db.detail}",
                           "fix the database or the DB_* settings")
    if state is DbState.PARTIAL_TABLES:
        return Step.refuse(
            "the database holds OpenNebula tables but no complete version rows (an "
            "interrupted bootstrap or a damaged database); oned cannot bootstrap over it",
            "restore a backup (`onerun restore FILE`, in maintenance mode), or check that "
            "DB_BACKEND/DB_HOST/DB_NAME name this cloud's database")
    if state in (DbState.EMPTY, DbState.PARTIAL_USERS) and not settings.accept_empty_db:
        return _used_volume(settings, obs, layout)
    return Step()


def _used_volume(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """An empty (or user-less) database on a volume a cloud used: a wrong DB_NAME or a lost
    database must not become a second, empty cloud beside the real one's files."""
    what = ("empty" if obs.db.state is DbState.EMPTY
            else "without users (a first start that never finished)")
    fix = ("check that DB_BACKEND/DB_HOST/DB_NAME name this cloud's database; to start a new, "
           "empty cloud on this volume on purpose set ONERUN_ACCEPT_EMPTY_DB=1")
    record = obs.volume.start_record
    if record is not None:
        damaged = f"; the record is damaged: {record.unreadable}" if record.unreadable else ""
        return Step.refuse(
            f"the database is {what} but this volume already ran a bootstrapped cloud "
            f"(recorded in {layout.volume_marker}{damaged})", fix)
    evidence = _previous_use(settings, obs, layout)
    if evidence and not obs.volume.bootstrap_started:
        return Step.refuse(
            f"the database is {what} but another installation used this volume: "
            f"{'; '.join(evidence)} (onerun never began a bootstrap here: "
            f"{layout.bootstrap_marker} is absent)", fix)
    return Step()


def _previous_use(settings: Settings, obs: Observation, layout: Layout) -> list[str]:
    """What on the volume says a cloud ran here: never written before a bootstrap, except
    by one onerun began itself (one_key, service auth files and the SSH key then), which
    its bootstrap record tells apart. one_auth and the remotes are not evidence: onerun
    writes them before every bootstrap."""
    volume = obs.volume
    found = []
    if volume.one_key is not None:
        found.append(str(layout.one_key))
    if volume.service_auth:
        found.append(f"service auth files in {layout.dot_one} "
                     f"({', '.join(sorted(volume.service_auth))})")
    if volume.ssh_private_key_present:
        found.append(f"an SSH key in {layout.ssh_dir}")
    if volume.datastores_with_content:
        found.append(f"datastores with content in {layout.datastores} "
                     f"({', '.join(volume.datastores_with_content)})")
    if not backend_for(settings).stored_on_volume and volume.sqlite_db.exists:
        found.append(f"an sqlite database {layout.sqlite_db}")
    return found


def _bootstrap_record(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """Before a bootstrap, and before anything it leaves (one_key, one_auth, service auth
    files, the SSH key), record that onerun began it: a later start tells its leftovers
    from another installation's by this. Once the database is bootstrapped it goes."""
    if obs.db.state in (DbState.EMPTY, DbState.PARTIAL_USERS):
        return Step([WriteFile(
            layout.bootstrap_marker,
            bootstrap_record(backend_for(settings).describe(settings, layout)), 0o600,
            why="onerun hands a first bootstrap to oned: a later start knows its leftovers",
            only_if_absent=True)])
    if obs.volume.bootstrap_started:
        return Step([RemoveFile(layout.bootstrap_marker, "the bootstrap it recorded is complete")])
    return Step()


def _fix_owners(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """Files oned must read or write, with a wrong owner (e.g. restored or copied as root).

    Only these few known files, each on its own; as oneadmin nothing can be given away.
    """
    if not obs.processes.running_as_root:
        return Step()
    account = layout.oneadmin
    ours = (account.uid, account.gid)
    actions: list[Action] = [
        EnsureFileOwner(fact.path, 0o600)
        for fact in obs.volume.secret_files
        if (fact.uid, fact.gid) != ours or fact.mode != 0o600
    ]
    db = obs.volume.sqlite_db
    if backend_for(settings).stored_on_volume and db.mode is not None and (
            (db.uid, db.gid) != ours or db.mode & 0o600 != 0o600):
        actions.append(EnsureFileOwner(db.path, 0o600,
                                       "oned (as oneadmin) reads and writes the database"))
    return Step(actions)


def _one_key(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """one_key encrypts attributes in the DB: a new one silently breaks them. oned writes a
    new key whenever the file is missing (src/template/OpenNebulaTemplate.cc in OpenNebula/one).

    oned uses the first 32 bytes of the file's first token as an AES-256 key
    (src/common/NebulaUtil.cc): an empty file holds no key (treated as missing), a shorter
    one makes oned read past it (refused).
    """
    found = obs.volume.one_key
    given = settings.one_key
    if found is not None and found.reveal() and len(found.reveal().encode()) < ONE_KEY_MIN_LENGTH:
        return Step.refuse(
            f"{layout.one_key} holds a key shorter than {ONE_KEY_MIN_LENGTH} characters",
            "oned uses the first 32 bytes of the key for AES-256 and reads past a shorter one, "
            f"so what it encrypts cannot be decrypted reliably: put this cloud's key (at least "
            f"{ONE_KEY_MIN_LENGTH} characters) into {layout.one_key}")
    present = found if found is not None and found.reveal() else None
    bootstrapped = obs.db.state is DbState.BOOTSTRAPPED
    if given is not None and present is not None and present != given:
        return Step.refuse(
            f"{layout.one_key} differs from ONE_KEY",
            "one_key encrypts secrets in the database; set ONE_KEY to the key on the volume, "
            "or remove the file only if you know the database was encrypted with ONE_KEY",
        )
    if present is not None:
        return _volume_key_belongs(present, obs, layout) if bootstrapped else Step()
    if given is not None:
        return _given_key(settings, given, obs, layout)
    if bootstrapped:
        return Step.refuse(
            f"{layout.one_key} is {'empty' if found is not None else 'missing'} but the "
            "database is bootstrapped",
            "oned would mint a new key and every encrypted attribute would be lost: restore "
            "the volume's one_key or pass the original key as ONE_KEY / ONE_KEY_FILE",
        )
    if found is not None:
        return Step([RemoveFile(
            layout.one_key, "empty: oned would encrypt with an empty key; without it oned "
                            "writes a new one")])
    return Step()


def _volume_key_belongs(key: Secret, obs: Observation, layout: Layout) -> Step:
    """The volume's own key against the fingerprint recorded in the database, when there is
    one: a volume and a database of two different clouds must not start together. (No trial
    decryption here: this key is the one oned already uses, not a new one.)"""
    if obs.db.one_key_fingerprint is None:
        return Step()
    proof = prove_key(key.reveal(), obs.db.one_key_fingerprint, ())
    if proof.belongs is False:
        return Step.refuse(
            f"{layout.one_key} does not belong to this database: {proof.how}",
            "check that DB_BACKEND/DB_HOST/DB_NAME name this volume's database, or put this "
            f"database's key into {layout.one_key}")
    return Step()


def _given_key(settings: Settings, given: Secret, obs: Observation, layout: Layout) -> Step:
    """ONE_KEY for a volume without a key is written. Beside a bootstrapped database only
    when the database proves it (recorded fingerprint, or it decrypts an encrypted
    attribute), or, when nothing can tell, with ONERUN_TRUST_ONE_KEY=1. A disproved key is
    always refused: oned would encrypt with it for good (an attribute it cannot decrypt is
    encrypted again on its next update, src/common/Attribute.cc in OpenNebula/one)."""
    write = WriteFile(layout.one_key, f"{given.reveal()}\n".encode(), 0o600,
                      why="one_key from ONE_KEY", sensitive=True)
    if obs.db.state is not DbState.BOOTSTRAPPED:
        return Step([write])
    proof = prove_key(given.reveal(), obs.db.one_key_fingerprint, obs.db.encrypted_values)
    if proof.belongs is False:
        return Step.refuse(
            f"ONE_KEY does not belong to this database: {proof.how}",
            "set ONE_KEY (or ONE_KEY_FILE) to the key this database was encrypted with (the "
            "one_key of its first volume), or check that DB_BACKEND/DB_HOST/DB_NAME name "
            "the right database; nothing was written")
    if proof.belongs is None and not settings.trust_one_key:
        return Step.refuse(
            f"{layout.one_key} is missing and nothing proves that ONE_KEY belongs to this "
            f"bootstrapped database: {proof.how}",
            "a wrong key makes oned encrypt new secrets with it for good: if ONE_KEY is this "
            "database's key (the one_key of its first volume), set ONERUN_TRUST_ONE_KEY=1 for "
            "this start; otherwise set ONE_KEY to that key")
    how = proof.how if proof.belongs else f"trusted with ONERUN_TRUST_ONE_KEY=1 ({proof.how})"
    return Step([Check("one_key", "ok" if proof.belongs else "note",
                       f"ONE_KEY belongs to the database: {how}"), write])


def _versions(obs: Observation) -> Step:
    """oned refuses any DB version mismatch and never migrates by itself
    (src/nebula/SystemDB.cc in OpenNebula/one). An empty DB has no version yet; one whose
    first start never finished (no users) cannot be upgraded by onedb."""
    if obs.db.state not in (DbState.PARTIAL_USERS, DbState.BOOTSTRAPPED):
        return Step()
    expected = obs.image.versions.db_version
    if expected is None:
        return Step([Check(
            "db version", "skipped",
            "the image's onedb/database_schema.rb is absent: the DB version is not compared")])
    expected_local = obs.image.versions.local_db_version or expected
    found_text = obs.db.db_version or "unknown"
    local_text = obs.db.local_db_version or found_text
    try:
        found = Version.parse(found_text)
        found_local = Version.parse(local_text)
    except ValueError:
        return Step.refuse(
            f"the database reports an unreadable version {found_text!r}",
            "check the database is OpenNebula's; restore a backup if it is damaged")
    if found == expected and found_local == expected_local:
        return Step([Check(
            "db version", "ok", f"database {found} matches the image ({expected})")])
    if found > expected or found_local > expected_local:
        return Step.refuse(
            f"the database version {found} is newer than this image's OpenNebula expects "
            f"({expected}); downgrades are not possible",
            f"run an image of OpenNebula {found.minor_series}.x (or newer) on this database")
    upgrade = Upgrade(db_version=str(found), target_version=str(expected))
    if obs.db.state is DbState.PARTIAL_USERS:
        return Step.refuse(
            f"the database's first start never finished (no users yet) and its version "
            f"{upgrade.db_version} differs from this image's ({upgrade.target_version}); "
            "onedb cannot upgrade a database without users",
            f"start it once with an image of OpenNebula {upgrade.db_version} so oned "
            "finishes the bootstrap, or check that DB_BACKEND/DB_HOST/DB_NAME name the "
            "database meant for this image")
    return Step(upgrade=upgrade)


def _one_auth_line(password: str) -> bytes:
    return f"oneadmin:{password}\n".encode()


def _bootstrap_auth(settings: Settings, obs: Observation, layout: Layout,
                    new_password: Callable[[], str]) -> Step:
    """EMPTY or PARTIAL_USERS: oned will create users and write the service auth files.

    Leftover service auth files make that bootstrap abort (src/um/UserPool.cc in
    OpenNebula/one); in these states user 0 does not exist, so their secret is in no
    database and removing them loses nothing.
    """
    if obs.db.state not in (DbState.EMPTY, DbState.PARTIAL_USERS):
        return Step()
    actions: list[Action] = [
        RemoveFile(layout.service_auth(name), "left over from an unfinished bootstrap; "
                   "oned refuses to bootstrap while it exists and writes a new one")
        for name in SERVICE_AUTH_FILES
        if name in obs.volume.service_auth
    ]
    if settings.oneadmin_password is not None:
        actions.append(WriteFile(
            layout.one_auth, _one_auth_line(settings.oneadmin_password.reveal()), 0o600,
            why="oneadmin credentials from ONEADMIN_PASSWORD for the bootstrap", sensitive=True))
    elif obs.volume.one_auth_password is not None and obs.volume.one_auth_password.reveal():
        actions.append(Check("one_auth", "ok", "kept the one_auth already on the volume"))
    else:
        actions.append(WriteFile(
            layout.one_auth, _one_auth_line(new_password()), 0o600,
            why="no ONEADMIN_PASSWORD given: generated a strong password; read it from "
                f"{layout.one_auth}", sensitive=True))
    return Step(actions)


def _bootstrapped_auth(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """BOOTSTRAPPED: one_auth must hold oneadmin's password in the database."""
    if obs.db.state is not DbState.BOOTSTRAPPED:
        return Step()
    stored = obs.db.oneadmin_password_sha256
    given = settings.oneadmin_password
    if given is not None:
        if stored is not None and given.sha256() != stored:
            return Step.refuse(
                "ONEADMIN_PASSWORD does not match the password of oneadmin (user 0) in the "
                "database",
                "set ONEADMIN_PASSWORD to oneadmin's current password, or change it first "
                "with `oneuser passwd 0` and then update the secret",
            )
        return Step([WriteFile(
            layout.one_auth, _one_auth_line(given.reveal()), 0o600,
            why="oneadmin credentials from ONEADMIN_PASSWORD", sensitive=True)])
    if not obs.volume.one_auth_present:
        return Step.refuse(
            f"{layout.one_auth} is missing and ONEADMIN_PASSWORD is not set",
            "oned exits without one_auth: set ONEADMIN_PASSWORD(_FILE) to oneadmin's password",
        )
    current = obs.volume.one_auth_password
    if stored is not None and (current is None or current.sha256() != stored):
        return Step.refuse(
            f"{layout.one_auth} does not hold oneadmin's password in the database: the "
            "hook manager, the services and the probes could never log in",
            "set ONEADMIN_PASSWORD(_FILE) to oneadmin's current password; onerun then "
            "rewrites one_auth")
    return Step()


def _service_auth(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """BOOTSTRAPPED: every service auth file this release uses must log serveradmin in.

    A missing, empty or stale one (a restored DB) is rewritten from one that matches the DB
    (as onedb's 7.2->7.4 migrator copies them), so running services keep working. When none
    matches, the wrong ones are removed (the services wait for their file) and post-start
    sets a new secret through the API once oned answers, then writes them all; except in an
    HA zone, where that secret is the zone's: every other member's services would lose it.
    """
    if obs.db.state is not DbState.BOOTSTRAPPED:
        return Step()
    expected = service_auth_files_for(obs.image.versions.release, obs.image.installed_services)
    stored = obs.db.serveradmin_password_sha256
    good = {name: content for name, content in sorted(obs.volume.service_auth.items())
            if _serveradmin_secret(content, stored) is not None}
    wrong = [name for name in expected if name not in good]
    if not wrong:
        return Step()
    if good:
        source_name, source = next(iter(good.items()))
        return Step([
            WriteFile(layout.service_auth(name), source.reveal().encode(), 0o600,
                      why=f"missing or not serveradmin's current secret; copied from "
                          f"{source_name}",
                      sensitive=True)
            for name in wrong])
    if settings.ha is not None:
        return Step.refuse(
            f"none of {', '.join(expected)} in {layout.dot_one} logs serveradmin in, and in "
            "an HA zone a new serveradmin secret would be the whole zone's: every other "
            "member's services would stop logging in",
            f"copy the service auth files ({', '.join(expected)}) from another member's "
            f"{layout.dot_one}, mode 0600, owned by oneadmin; then start this member again")
    actions: list[Action] = [
        RemoveFile(layout.service_auth(name),
                   "does not hold serveradmin's current secret; written anew once oned answers")
        for name in wrong
        if name in obs.volume.service_auth
    ]
    actions.append(Check(
        "service auth files", "note",
        f"none of {', '.join(expected)} logs serveradmin in: once oned answers, serveradmin "
        "gets a new secret and every service auth file is written again"))
    return Step(actions, heal_service_auth=True)


def _serveradmin_secret(content: Secret, stored_sha256: str | None) -> str | None:
    """The secret of a service auth file when it can log serveradmin in, else None.

    The files hold ``serveradmin:<secret>``; the DB holds sha256(secret) as serveradmin's
    password (src/um/UserPool.cc in OpenNebula/one).
    """
    user, _, secret = content.reveal().partition("\n")[0].partition(":")
    secret = secret.strip()
    if user != "serveradmin" or not secret:
        return None
    if stored_sha256 is not None and hashlib.sha256(secret.encode()).hexdigest() != stored_sha256:
        return None
    return secret


def _no_running_oned(obs: Observation) -> Step:
    """Two oned processes on one database corrupt it."""
    if obs.processes.oned_running is not None:
        return Step.refuse(
            f"an oned may still run on this volume: {obs.processes.oned_running}",
            "stop it first; two oned processes on one database corrupt it")
    return Step()


def _stale_lock(obs: Observation, layout: Layout) -> Step:
    """oned refuses to start while its lock file exists; no oned runs (checked before)."""
    if obs.processes.lock_file_present:
        return Step([RemoveFile(
            layout.lock_file, "stale oned lock (no oned runs); oned refuses to start with it")])
    return Step()


def _remotes(obs: Observation, layout: Layout) -> Step:
    """The drivers and the scheduler must match oned, which runs them from the remotes (the
    scheduler is a driver since 7.0, src/schedm_mad/one_sched.rb in OpenNebula/one).

    The copy carries the stamp of the image tree it came from, so a new package revision or
    an image rollback puts the matching remotes in place. The operator's files in the old
    tree are kept (ReplaceTree, onerun/remotes.py; docs/upgrades.md). O(1) in the volume's
    size.
    """
    wanted = obs.image.remotes_dist_stamp
    stamped = obs.volume.remotes_stamp
    if wanted is None:
        return Step([Check(
            "remotes", "skipped", f"{layout.remotes_dist} is absent: remotes left as they are")])
    if not obs.volume.remotes_present:
        return Step([ReplaceTree(layout.remotes_dist, layout.remotes,
                                 "missing on the volume", stamp=wanted)])
    if stamped != wanted:
        return Step([ReplaceTree(
            layout.remotes_dist, layout.remotes,
            f"the image's remotes are {wanted}, the volume's "
            f"{stamped or 'were not copied by onerun'}", stamp=wanted)])
    return Step()


def _ssh(settings: Settings, obs: Observation, layout: Layout) -> Step:
    """oneadmin's SSH key and the packaged ~/.ssh/config the drivers use."""
    actions: list[Action] = []
    if settings.ssh_dir is not None:
        actions.append(CopySshKeys(settings.ssh_dir, layout.ssh_dir))
    elif not obs.volume.ssh_private_key_present:
        actions.append(GenerateSshKey(layout.ssh_dir / "id_ed25519"))
    if not obs.volume.ssh_config_present:
        if obs.image.ssh_config_dist_present:
            actions.append(CopyFile(
                layout.ssh_config_dist, layout.ssh_dir / "config", 0o600,
                "the volume hides the packaged ~/.ssh/config (ControlPath, accept-new)"))
        else:
            actions.append(Check("ssh config", "skipped", f"{layout.ssh_config_dist} is absent"))
    return Step(actions)


def _maintenance_flag(settings: Settings, layout: Layout) -> Step:
    """The flag the probes and supervisord read: present exactly in maintenance mode."""
    if settings.maintenance:
        return Step([_maintenance_flag_file(layout)])
    return Step([RemoveFile(layout.maintenance_flag, "maintenance mode is off")])


def _maintenance_flag_file(layout: Layout) -> WriteFile:
    return WriteFile(layout.maintenance_flag, b"ONERUN_MAINTENANCE=1\n", 0o644,
                     why="maintenance mode: no OpenNebula service starts; readiness fails")


def _for_maintenance(decision: Decision, obs: Observation, layout: Layout) -> Decision:
    """ONERUN_MAINTENANCE=1 keeps the container up for an operator whatever the DB's state,
    and starts no OpenNebula service. This is how `onerun restore` is reached after a failure.

    With a bootstrapped DB everything is prepared as usual, except that a schema upgrade
    waits for the next normal start. When a start would be refused, or would prepare a
    bootstrap (removing leftover auth files, writing one_auth: an operator may be about to
    restore a dump instead), only directories and the maintenance flag are written and the
    rest is reported. Post-start records and heals nothing."""
    refusal = decision.refusal
    if refusal is None and obs.db.state not in (DbState.EMPTY, DbState.PARTIAL_USERS):
        pending: list[Action] = [] if decision.upgrade is None else [Check(
            "schema upgrade", "note",
            f"pending from {decision.upgrade.db_version} to {decision.upgrade.target_version}: "
            "it runs at the next start without maintenance mode")]
        return Decision(actions=[*decision.actions, *pending])
    writable = obs.processes.var_lib_one_writable_by_oneadmin
    kept: list[Action] = [
        a for a in decision.actions
        if isinstance(a, Check) or (isinstance(a, EnsureDirectory) and (
            writable or not a.path.is_relative_to(layout.var_lib_one)))]
    if refusal is not None:
        kept.append(Check("start", "note", f"outside maintenance onerun would refuse: "
                                           f"{refusal.reason} (fix: {refusal.fix})"))
    else:
        kept.append(Check("start", "note",
                          "the DB needs a bootstrap: its preparation is left for a normal "
                          "start"))
    kept.append(_maintenance_flag_file(layout))
    return Decision(actions=kept)
