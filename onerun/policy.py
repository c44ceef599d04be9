"""The policy: a pure function from (Settings, Observation) to what start must do, or a refusal.

Every rule here comes from how oned really bootstraps and fails (reference sections 1-2;
fixtures README): the community entrypoint broke each of them. No I/O happens here; the
fault matrix is a table test of ``decide``.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Callable
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

# Letters and digits plus punctuation that oned, onedb's quoting and oned.conf all accept
# (reference 3.2): no quotes, backslash, whitespace; "]]>" cannot form without ">".
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.,+=@%"
GENERATED_PASSWORD_LENGTH = 32


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


@dataclass(frozen=True)
class Upgrade:
    """The DB is older than the image: back up, run onedb upgrade, verify."""

    db_version: str
    target_version: str


@dataclass
class Decision:
    """What the policy decided. ``refusal`` set: nothing is to be changed."""

    actions: list[Action] = field(default_factory=list)
    refusal: Refusal | None = None
    upgrade: Upgrade | None = None
    heal_service_auth: bool = False
    record_start: tuple[str | None, str | None] | None = None
    record_key_fingerprint: bool = False  # post-start records it in oneadmin's template

    def refuse(self, reason: str, fix: str) -> Decision:
        self.refusal = Refusal(reason, fix)
        return self


def _directories(layout: Layout) -> list[Action]:
    """What oned needs on the volume and at runtime, one directory at a time (never -R).

    /etc/one is rendered's (render.py), /var/log/one and /run/onerun supervisord's
    (supervisor.py): each directory has one owner module.
    """
    return [
        EnsureDirectory(layout.var_lib_one, None, why="oneadmin's home and the volume"),
        EnsureDirectory(layout.dot_one, 0o700, why="one_key, one_auth, service auth files"),
        EnsureDirectory(layout.ssh_dir, 0o700, why="oneadmin's SSH key for the hypervisors"),
        EnsureDirectory(layout.state_dir, 0o700, why="onerun's record of the last start"),
        EnsureDirectory(layout.run_one, 0o750, why="oned runtime files"),
        EnsureDirectory(layout.ssh_socks, 0o700, why="SSH control sockets of the drivers"),
        EnsureDirectory(layout.lock_dir, 0o755, why="oned's lock file"),
    ]


def _fix_owners(settings: Settings, obs: Observation, layout: Layout) -> list[Action]:
    """Files oned must read or write, with a wrong owner (e.g. restored or copied as root).

    Only these few known files, each on its own; as oneadmin nothing can be given away.
    """
    if not obs.processes.running_as_root:
        return []
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
    return actions


def _one_auth_line(password: str) -> bytes:
    return f"oneadmin:{password}\n".encode()


def _bootstrap_auth(
    settings: Settings, obs: Observation, layout: Layout, new_password: Callable[[], str]
) -> list[Action]:
    """EMPTY or PARTIAL_USERS: oned will create users and write the service auth files.

    Leftover service auth files make that bootstrap abort (reference 1.4); in these states
    user 0 does not exist, so their secret is in no database and removing them loses nothing.
    """
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
    return actions


def _one_key(settings: Settings, obs: Observation, layout: Layout, decision: Decision) -> None:
    """one_key encrypts attributes in the DB: a new one silently breaks them (reference 1.5).

    oned uses the first 32 bytes of the file's first token as an AES-256 key: an empty file
    holds no key (treated as missing), a shorter one makes oned read past it (refused).
    """
    found = obs.volume.one_key
    given = settings.one_key
    if found is not None and found.reveal() and len(found.reveal().encode()) < ONE_KEY_MIN_LENGTH:
        decision.refuse(
            f"{layout.one_key} holds a key shorter than {ONE_KEY_MIN_LENGTH} characters",
            "oned uses the first 32 bytes of the key for AES-256 and reads past a shorter one, "
            f"so what it encrypts cannot be decrypted reliably: put this cloud's key (at least "
            f"{ONE_KEY_MIN_LENGTH} characters) into {layout.one_key}")
        return
    present = found if found is not None and found.reveal() else None
    bootstrapped = obs.db.state is DbState.BOOTSTRAPPED
    if given is not None and present is not None and present != given:
        decision.refuse(
            f"{layout.one_key} differs from ONE_KEY",
            "one_key encrypts secrets in the database; set ONE_KEY to the key on the volume, "
            "or remove the file only if you know the database was encrypted with ONE_KEY",
        )
    elif present is not None and bootstrapped:
        _volume_key_belongs(present, obs, layout, decision)
    elif given is not None and present is None:
        if bootstrapped and not _given_key_belongs(settings, given, obs, layout, decision):
            return
        decision.actions.append(WriteFile(
            layout.one_key, f"{given.reveal()}\n".encode(), 0o600,
            why="one_key from ONE_KEY", sensitive=True))
    elif present is None and bootstrapped:
        decision.refuse(
            f"{layout.one_key} is {'empty' if found is not None else 'missing'} but the "
            "database is bootstrapped",
            "oned would mint a new key and every encrypted attribute would be lost: restore "
            "the volume's one_key or pass the original key as ONE_KEY / ONE_KEY_FILE",
        )
    elif present is None and found is not None:
        decision.actions.append(RemoveFile(
            layout.one_key, "empty: oned would encrypt with an empty key; without it oned "
                            "writes a new one"))


def _volume_key_belongs(key: Secret, obs: Observation, layout: Layout,
                        decision: Decision) -> None:
    """The volume's own key against the fingerprint recorded in the database, when there is
    one: a volume and a database of two different clouds must not start together. (No trial
    decryption here: this key is the one oned already uses, not a new one.)"""
    if obs.db.one_key_fingerprint is None:
        return
    proof = prove_key(key.reveal(), obs.db.one_key_fingerprint, ())
    if proof.belongs is False:
        decision.refuse(
            f"{layout.one_key} does not belong to this database: {proof.how}",
            "check that DB_BACKEND/DB_HOST/DB_NAME name this volume's database, or put this "
            f"database's key into {layout.one_key}")


def _given_key_belongs(settings: Settings, given: Secret, obs: Observation, layout: Layout,
                       decision: Decision) -> bool:
    """ONE_KEY for a volume without a key, beside a bootstrapped database: written only when
    the database proves it (recorded fingerprint, or it decrypts an encrypted attribute), or,
    when nothing can tell, with ONERUN_TRUST_ONE_KEY=1. A disproved key is always refused:
    oned would encrypt with it for good (reference 1.5)."""
    proof = prove_key(given.reveal(), obs.db.one_key_fingerprint, obs.db.encrypted_values)
    if proof.belongs is False:
        decision.refuse(
            f"ONE_KEY does not belong to this database: {proof.how}",
            "set ONE_KEY (or ONE_KEY_FILE) to the key this database was encrypted with (the "
            "one_key of its first volume), or check that DB_BACKEND/DB_HOST/DB_NAME name "
            "the right database; nothing was written")
        return False
    if proof.belongs is None and not settings.trust_one_key:
        decision.refuse(
            f"{layout.one_key} is missing and nothing proves that ONE_KEY belongs to this "
            f"bootstrapped database: {proof.how}",
            "a wrong key makes oned encrypt new secrets with it for good: if ONE_KEY is this "
            "database's key (the one_key of its first volume), set ONERUN_TRUST_ONE_KEY=1 for "
            "this start; otherwise set ONE_KEY to that key")
        return False
    how = proof.how if proof.belongs else f"trusted with ONERUN_TRUST_ONE_KEY=1 ({proof.how})"
    decision.actions.append(Check("one_key", "ok" if proof.belongs else "note",
                                  f"ONE_KEY belongs to the database: {how}"))
    return True


def _bootstrapped_auth(settings: Settings, obs: Observation, layout: Layout,
                       decision: Decision) -> None:
    stored = obs.db.oneadmin_password_sha256
    given = settings.oneadmin_password
    if given is not None:
        if stored is not None and given.sha256() != stored:
            decision.refuse(
                "ONEADMIN_PASSWORD does not match the password of oneadmin (user 0) in the "
                "database",
                "set ONEADMIN_PASSWORD to oneadmin's current password, or change it first "
                "with `oneuser passwd 0` and then update the secret",
            )
            return
        decision.actions.append(WriteFile(
            layout.one_auth, _one_auth_line(given.reveal()), 0o600,
            why="oneadmin credentials from ONEADMIN_PASSWORD", sensitive=True))
    elif not obs.volume.one_auth_present:
        decision.refuse(
            f"{layout.one_auth} is missing and ONEADMIN_PASSWORD is not set",
            "oned exits without one_auth: set ONEADMIN_PASSWORD(_FILE) to oneadmin's password",
        )
        return
    else:
        current = obs.volume.one_auth_password
        if stored is not None and (current is None or current.sha256() != stored):
            decision.refuse(
                f"{layout.one_auth} does not hold oneadmin's password in the database: the "
                "hook manager, the services and the probes could never log in",
                "set ONEADMIN_PASSWORD(_FILE) to oneadmin's current password; onerun then "
                "rewrites one_auth")
            return
    _service_auth(obs, layout, decision)


def _serveradmin_secret(content: Secret, stored_sha256: str | None) -> str | None:
    """The secret of a service auth file when it can log serveradmin in, else None.

    The files hold ``serveradmin:<secret>``; the DB holds sha256(secret) (reference 1.3).
    """
    user, _, secret = content.reveal().partition("\n")[0].partition(":")
    secret = secret.strip()
    if user != "serveradmin" or not secret:
        return None
    if stored_sha256 is not None and hashlib.sha256(secret.encode()).hexdigest() != stored_sha256:
        return None
    return secret


def _service_auth(obs: Observation, layout: Layout, decision: Decision) -> None:
    """Bootstrapped DB: every service auth file this release uses must log serveradmin in.

    A missing, empty or stale one (a restored DB) is rewritten from one that matches the DB
    (as onedb's 7.2->7.4 migrator copies them), so running services keep working. When none
    matches, the wrong ones are removed (the services wait for their file) and post-start
    sets a new secret through the API once oned answers, then writes them all.
    """
    expected = service_auth_files_for(obs.image.versions.release, obs.image.installed_services)
    stored = obs.db.serveradmin_password_sha256
    good = {name: content for name, content in sorted(obs.volume.service_auth.items())
            if _serveradmin_secret(content, stored) is not None}
    wrong = [name for name in expected if name not in good]
    if not wrong:
        return
    if good:
        source_name, source = next(iter(good.items()))
        for name in wrong:
            decision.actions.append(WriteFile(
                layout.service_auth(name), source.reveal().encode(), 0o600,
                why=f"missing or not serveradmin's current secret; copied from {source_name}",
                sensitive=True))
        return
    for name in wrong:
        if name in obs.volume.service_auth:
            decision.actions.append(RemoveFile(
                layout.service_auth(name),
                "does not hold serveradmin's current secret; written anew once oned answers"))
    decision.heal_service_auth = True
    decision.actions.append(Check(
        "service auth files", "note",
        f"none of {', '.join(expected)} logs serveradmin in: once oned answers, serveradmin "
        "gets a new secret and every service auth file is written again"))


def _versions(obs: Observation, decision: Decision) -> None:
    """oned refuses any DB version mismatch and never migrates by itself (reference 2.3)."""
    expected = obs.image.versions.db_version
    if expected is None:
        decision.actions.append(Check(
            "db version", "skipped",
            "the image's onedb/database_schema.rb is absent: the DB version is not compared"))
        return
    expected_local = obs.image.versions.local_db_version or expected
    found_text = obs.db.db_version or "unknown"
    local_text = obs.db.local_db_version or found_text
    try:
        found = Version.parse(found_text)
        found_local = Version.parse(local_text)
    except ValueError:
        decision.refuse(
            f"the database reports an unreadable version {found_text!r}",
            "check the database is OpenNebula's; restore a backup if it is damaged")
        return
    if found == expected and found_local == expected_local:
        decision.actions.append(Check(
            "db version", "ok", f"database {found} matches the image ({expected})"))
    elif found > expected or found_local > expected_local:
        decision.refuse(
            f"the database version {found} is newer than this image's OpenNebula expects "
            f"({expected}); downgrades are not possible",
            f"run an image of OpenNebula {found.minor_series}.x (or newer) on this database")
    else:
        decision.upgrade = Upgrade(db_version=str(found), target_version=str(expected))


def _runtime_files(settings: Settings, obs: Observation, layout: Layout,
                   decision: Decision) -> None:
    """Stale lock, remotes, SSH, maintenance flag: all O(1) in the volume's size."""
    if obs.processes.oned_running is not None:
        decision.refuse(
            f"an oned may still run on this volume: {obs.processes.oned_running}",
            "stop it first; two oned processes on one database corrupt it")
        return
    if obs.processes.lock_file_present:
        decision.actions.append(RemoveFile(
            layout.lock_file, "stale oned lock (no oned runs); oned refuses to start with it"))

    # The drivers and the scheduler must match oned (reference 3.6). The copy carries the
    # stamp of the image tree it came from, so a new package revision or an image rollback
    # puts the matching remotes in place. The operator's files in the old tree are kept
    # (ReplaceTree, onerun/remotes.py; docs/upgrades.md).
    wanted = obs.image.remotes_dist_stamp
    stamped = obs.volume.remotes_stamp
    if wanted is None:
        decision.actions.append(Check(
            "remotes", "skipped", f"{layout.remotes_dist} is absent: remotes left as they are"))
    elif not obs.volume.remotes_present:
        decision.actions.append(ReplaceTree(layout.remotes_dist, layout.remotes,
                                            "missing on the volume", stamp=wanted))
    elif stamped != wanted:
        decision.actions.append(ReplaceTree(
            layout.remotes_dist, layout.remotes,
            f"the image's remotes are {wanted}, the volume's "
            f"{stamped or 'were not copied by onerun'}", stamp=wanted))

    _ssh(settings, obs, layout, decision)

    if settings.maintenance:
        decision.actions.append(_maintenance_flag(layout))
    else:
        decision.actions.append(RemoveFile(layout.maintenance_flag, "maintenance mode is off"))


def _ssh(settings: Settings, obs: Observation, layout: Layout, decision: Decision) -> None:
    if settings.ssh_dir is not None:
        decision.actions.append(CopySshKeys(settings.ssh_dir, layout.ssh_dir))
    elif not obs.volume.ssh_private_key_present:
        decision.actions.append(GenerateSshKey(layout.ssh_dir / "id_ed25519"))
    if not obs.volume.ssh_config_present:
        if obs.image.ssh_config_dist_present:
            decision.actions.append(CopyFile(
                layout.ssh_config_dist, layout.ssh_dir / "config", 0o600,
                "the volume hides the packaged ~/.ssh/config (ControlPath, accept-new)"))
        else:
            decision.actions.append(Check(
                "ssh config", "skipped", f"{layout.ssh_config_dist} is absent"))


def _text(version: Version | None) -> str | None:
    return str(version) if version is not None else None


def decide(
    settings: Settings,
    obs: Observation,
    layout: Layout,
    new_password: Callable[[], str] = generate_password,
) -> Decision:
    """Decide what start does. Refusals leave the decision without actions to apply."""
    decision = _decide_start(settings, obs, layout, new_password)
    return _for_maintenance(decision, obs, layout) if settings.maintenance else decision


def _for_maintenance(decision: Decision, obs: Observation, layout: Layout) -> Decision:
    """ONERUN_MAINTENANCE=1 keeps the container up for an operator whatever the DB's state,
    and starts no OpenNebula service. This is how `onerun restore` is reached after a failure.

    With a bootstrapped DB everything is prepared as usual, except that a schema upgrade
    waits for the next normal start. When a start would be refused, or would prepare a
    bootstrap (removing leftover auth files, writing one_auth: an operator may be about to
    restore a dump instead), only directories and the maintenance flag are written and the
    rest is reported."""
    if decision.refusal is not None or obs.db.state in (DbState.EMPTY, DbState.PARTIAL_USERS):
        writable = obs.processes.var_lib_one_writable_by_oneadmin
        kept: list[Action] = [
            a for a in decision.actions
            if isinstance(a, Check) or (isinstance(a, EnsureDirectory) and (
                writable or not a.path.is_relative_to(layout.var_lib_one)))]
        if decision.refusal is not None:
            refusal = decision.refusal
            kept.append(Check("start", "note", f"outside maintenance onerun would refuse: "
                                               f"{refusal.reason} (fix: {refusal.fix})"))
        else:
            kept.append(Check("start", "note",
                              "the DB needs a bootstrap: its preparation is left for a normal "
                              "start"))
        kept.append(_maintenance_flag(layout))
        decision = Decision(actions=kept)
    if decision.upgrade is not None:
        decision.actions.append(Check(
            "schema upgrade", "note",
            f"pending from {decision.upgrade.db_version} to {decision.upgrade.target_version}: "
            "it runs at the next start without maintenance mode"))
        decision.upgrade = None
    decision.heal_service_auth = False
    decision.record_start = None
    decision.record_key_fingerprint = False
    return decision


def _maintenance_flag(layout: Layout) -> WriteFile:
    return WriteFile(layout.maintenance_flag, b"ONERUN_MAINTENANCE=1\n", 0o644,
                     why="maintenance mode: no OpenNebula service starts; readiness fails")


def _precondition_refusal(settings: Settings, obs: Observation,
                          layout: Layout) -> tuple[str, str] | None:
    """Reasons not to look any further: an unknown DB state, an unwritable volume."""
    if obs.volume.restore_failed:
        return (
            "a schema upgrade or its restore did not complete, so the database state is "
            f"unknown: {obs.volume.restore_failed}",
            "start in maintenance mode (ONERUN_MAINTENANCE=1), check the database's versions "
            "(`onedb version`), then run `onerun restore FILE` with the backup named in "
            f"{layout.restore_failed_marker}, or remove that file if the upgrade did complete")
    if not obs.processes.var_lib_one_writable_by_oneadmin:
        return (
            f"{layout.var_lib_one} is not writable by this user",
            "give the volume to uid 9869 (the chart sets fsGroup: 9869) or run as root once")
    if (backend_for(settings).stored_on_volume
            and not obs.processes.sqlite_db_writable_by_oneadmin):
        return (
            f"{layout.sqlite_db} is not writable by this user",
            "give the file to uid 9869 (e.g. `chown 9869:9869 one.db`) or run as root once")
    return None


def _hostname(obs: Observation, decision: Decision) -> None:
    """oned exits at start when the system hostname does not resolve and oned.conf sets no
    HOSTNAME (observe.HostnameFact): refuse first, naming the name and the fix."""
    fact = obs.hostname
    if fact is None:
        return
    if fact.configured is not None:
        decision.actions.append(Check(
            "hostname", "ok", f"oned.conf's HOSTNAME is {fact.configured}: oned looks no name "
                              "up at start (hypervisors must reach it by that name)"))
    elif fact.error is None:
        decision.actions.append(Check(
            "hostname", "ok", f"the system hostname {fact.system} resolves to "
                              f"{fact.canonical}, which oned will use as HOSTNAME"))
    else:
        decision.refuse(
            f"the container's hostname {fact.system!r} does not resolve ({fact.error}); "
            "oned.conf sets no HOSTNAME, so oned would look it up at start and exit",
            "set OPENNEBULA_HOSTNAME to the name or address the hypervisors reach this "
            f"front-end by (oned then looks nothing up), or make {fact.system} resolvable "
            f"in the container: `docker run --add-host {fact.system}:<address>`, or a "
            "hostAliases entry in the pod spec (onerun never edits /etc/hosts)")


def _image_notes(obs: Observation, layout: Layout) -> list[Action]:
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
    return notes


def _state_refusal(settings: Settings, obs: Observation,
                   layout: Layout) -> tuple[str, str] | None:
    """DB states no start may proceed on: unreadable, half-bootstrapped, or unexpectedly empty."""
    state = obs.db.state
    if state is DbState.UNREADABLE:  # only maintenance mode observes this
        return (f"the database could not be read: {obs.db.detail}",
                "fix the database or the DB_* settings")
    if state is DbState.PARTIAL_TABLES:
        return (
            "the database holds OpenNebula tables but no complete version rows (an "
            "interrupted bootstrap or a damaged database); oned cannot bootstrap over it",
            "restore a backup (`onerun restore FILE`, in maintenance mode), or check that "
            "DB_BACKEND/DB_HOST/DB_NAME name this cloud's database")
    if state in (DbState.EMPTY, DbState.PARTIAL_USERS) and not settings.accept_empty_db:
        return _used_volume_refusal(settings, obs, layout)
    return None


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


def _used_volume_refusal(settings: Settings, obs: Observation,
                         layout: Layout) -> tuple[str, str] | None:
    """An empty (or user-less) database on a volume a cloud used: a wrong DB_NAME or a lost
    database must not become a second, empty cloud beside the real one's files."""
    what = ("empty" if obs.db.state is DbState.EMPTY
            else "without users (a first start that never finished)")
    fix = ("check that DB_BACKEND/DB_HOST/DB_NAME name this cloud's database; to start a new, "
           "empty cloud on this volume on purpose set ONERUN_ACCEPT_EMPTY_DB=1")
    record = obs.volume.start_record
    if record is not None:
        damaged = f"; the record is damaged: {record.unreadable}" if record.unreadable else ""
        return (f"the database is {what} but this volume already ran a bootstrapped cloud "
                f"(recorded in {layout.volume_marker}{damaged})", fix)
    evidence = _previous_use(settings, obs, layout)
    if evidence and not obs.volume.bootstrap_started:
        return (f"the database is {what} but another installation used this volume: "
                f"{'; '.join(evidence)} (onerun never began a bootstrap here: "
                f"{layout.bootstrap_marker} is absent)", fix)
    return None


def _bootstrap_record(settings: Settings, obs: Observation, layout: Layout) -> list[Action]:
    """Before a bootstrap, and before anything it leaves (one_key, one_auth, service auth
    files, the SSH key), record that onerun began it: a later start tells its leftovers
    from another installation's by this. Once the database is bootstrapped it goes."""
    if obs.db.state in (DbState.EMPTY, DbState.PARTIAL_USERS):
        return [WriteFile(
            layout.bootstrap_marker,
            bootstrap_record(backend_for(settings).describe(settings, layout)), 0o600,
            why="onerun hands a first bootstrap to oned: a later start knows its leftovers",
            only_if_absent=True)]
    if obs.volume.bootstrap_started:
        return [RemoveFile(layout.bootstrap_marker, "the bootstrap it recorded is complete")]
    return []


def _decide_start(
    settings: Settings,
    obs: Observation,
    layout: Layout,
    new_password: Callable[[], str],
) -> Decision:
    """The decision for a normal start (maintenance adjusts it afterwards)."""
    decision = Decision(actions=_directories(layout) + _image_notes(obs, layout))
    blocked = _precondition_refusal(settings, obs, layout)
    if blocked is not None:
        return decision.refuse(*blocked)
    _hostname(obs, decision)
    if decision.refusal:
        return decision

    state = obs.db.state
    decision.actions.append(Check("database", "ok", f"{state.name}: {obs.db.detail}"))
    refused = _state_refusal(settings, obs, layout)
    if refused is not None:
        return decision.refuse(*refused)

    decision.actions.extend(_bootstrap_record(settings, obs, layout))
    decision.actions.extend(_fix_owners(settings, obs, layout))
    _one_key(settings, obs, layout, decision)
    if decision.refusal:
        return decision
    if state is DbState.PARTIAL_USERS:
        _versions(obs, decision)
        if decision.upgrade is not None:
            return decision.refuse(
                f"the database's first start never finished (no users yet) and its version "
                f"{decision.upgrade.db_version} differs from this image's "
                f"({decision.upgrade.target_version}); onedb cannot upgrade a database "
                "without users",
                f"start it once with an image of OpenNebula {decision.upgrade.db_version} so "
                "oned finishes the bootstrap, or check that DB_BACKEND/DB_HOST/DB_NAME name "
                "the database meant for this image")
        if decision.refusal:
            return decision
    if state in (DbState.EMPTY, DbState.PARTIAL_USERS):
        decision.actions.extend(_bootstrap_auth(settings, obs, layout, new_password))
    else:
        _versions(obs, decision)
        if decision.refusal:
            return decision
        _bootstrapped_auth(settings, obs, layout, decision)
        if decision.refusal:
            return decision
    _runtime_files(settings, obs, layout, decision)
    if decision.refusal is None:
        # A federation slave shares its master's users: the master records it there.
        decision.record_key_fingerprint = (obs.db.one_key_fingerprint is None
                                           and not obs.db.is_slave)
        decision.record_start = (
            _text(obs.image.versions.release),
            decision.upgrade.target_version if decision.upgrade
            else obs.db.db_version or _text(obs.image.versions.db_version),
        )
    return decision


