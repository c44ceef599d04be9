"""The fault matrix as a table test of the pure policy: each row, its decision and exit code."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from onerun.database import DbObservation, DbState
from onerun.errors import EXIT_OK, EXIT_REFUSED
from onerun.layout import Layout
from onerun.marker import StartRecord
from onerun.observe import (
    HostnameFact,
    ImageFacts,
    Observation,
    OwnedPath,
    ProcessFacts,
    VolumeFacts,
)
from onerun.onekey import fingerprint
from onerun.plan import (
    Check,
    EnsureDirectory,
    EnsureFileOwner,
    Plan,
    RemoveFile,
    ReplaceTree,
    WriteFile,
)
from onerun.policy import (
    GENERATED_PASSWORD_LENGTH,
    PASSWORD_ALPHABET,
    decide,
    generate_password,
)
from onerun.secret import Secret
from onerun.settings import load_settings
from onerun.versions import ImageVersions, Version

LAYOUT = Layout(Path("/test-root"))
PASSWORD = "fixturepass"
PASSWORD_SHA = hashlib.sha256(PASSWORD.encode()).hexdigest()
KEY = "k" * 64
SERVERADMIN_SHA = hashlib.sha256(b"s3cret").hexdigest()  # the secret in volume()'s files
STAMP_70 = "7.0.2+fedcba9876543210"  # the image's remotes-dist (release + listing digest)
IMAGE_70 = ImageVersions(Version.parse("7.0.2"), Version.parse("7.0.0"), Version.parse("7.0.0"))


def db(state: DbState, version: str | None = "7.0.0", sha: str | None = PASSWORD_SHA, *,
       fingerprint: str | None = None, encrypted: tuple[str, ...] = (),
       slave: bool = False) -> Any:
    bootstrapped = state in (DbState.BOOTSTRAPPED, DbState.PARTIAL_USERS)
    return DbObservation(
        state=state,
        db_version=version if bootstrapped else None,
        local_db_version=version if bootstrapped else None,
        oneadmin_password_sha256=sha if state is DbState.BOOTSTRAPPED else None,
        oneadmin_name="oneadmin" if state is DbState.BOOTSTRAPPED else None,
        serveradmin_present=state is DbState.BOOTSTRAPPED,
        is_slave=slave,
        tables=frozenset(),
        detail="table test",
        serveradmin_password_sha256=SERVERADMIN_SHA if state is DbState.BOOTSTRAPPED else None,
        one_key_fingerprint=fingerprint,
        encrypted_values=encrypted,
    )


def volume(*, one_key: str | None = None, one_auth: str | None = None,
           service_auth: tuple[str, ...] = (), record: str | None = None,
           restore_failed: str | None = None, remotes_stamp: str | None = STAMP_70,
           serveradmin: str | None = "serveradmin:s3cret\n",
           ssh_key: bool = False, began: bool = False,
           datastores: tuple[str, ...] = ()) -> VolumeFacts:
    return VolumeFacts(
        var_lib_one=OwnedPath(LAYOUT.var_lib_one, 9869, 9869, 0o750),
        sqlite_db=OwnedPath(LAYOUT.sqlite_db, None, None, None),
        one_key=Secret(one_key) if one_key is not None else None,
        one_auth_present=one_auth is not None,
        one_auth_password=Secret(one_auth) if one_auth else None,
        service_auth={name: Secret(serveradmin or "") for name in service_auth},
        secret_files=(),
        start_record=StartRecord(record, "7.0.0", 0.0) if record else None,
        bootstrap_started=began,
        datastores_with_content=datastores,
        restore_failed=restore_failed,
        remotes_present=True,
        remotes_stamp=remotes_stamp,
        ssh_private_key_present=ssh_key,
        ssh_config_present=True,
    )


def observation(db_obs: Any, vol: VolumeFacts, *, image: ImageVersions = IMAGE_70,
                lock: bool = False, oned: str | None = None,
                hostname: HostnameFact | None = None) -> Observation:
    return Observation(
        hostname=hostname,
        volume=vol,
        image=ImageFacts(image, installed_services=frozenset({"oned"}),
                         remotes_dist_stamp=STAMP_70, ssh_config_dist_present=True),
        processes=ProcessFacts(lock_file_present=lock, oned_running=oned,
                               running_as_root=False, var_lib_one_writable_by_oneadmin=True,
                               sqlite_db_writable_by_oneadmin=True),
        db=db_obs,
    )


def settings(**env: str) -> Any:
    return load_settings(env)


ALL_70 = ("sunstone_auth", "onegate_auth", "oneflow_auth")

# (row name, settings env, observation, expected exit code, text the refusal must contain)
MATRIX = [
    ("fresh install", {}, observation(db(DbState.EMPTY), volume()), EXIT_OK, None),
    ("PV lost, DB bootstrapped: one_key missing",
     {"ONEADMIN_PASSWORD": PASSWORD}, observation(db(DbState.BOOTSTRAPPED), volume()),
     EXIT_REFUSED, "one_key"),
    ("another installation's one_key and auth files, no record, DB empty",
     {}, observation(db(DbState.EMPTY), volume(one_key=KEY, one_auth="x", service_auth=ALL_70)),
     EXIT_REFUSED, "ONERUN_ACCEPT_EMPTY_DB"),
    ("another installation's one_key alone, DB empty",
     {}, observation(db(DbState.EMPTY), volume(one_key=KEY)),
     EXIT_REFUSED, "one_key"),
    ("another installation's SSH key, DB empty",
     {}, observation(db(DbState.EMPTY), volume(ssh_key=True)),
     EXIT_REFUSED, "SSH"),
    ("another installation's files, DB empty, operator accepts",
     {"ONERUN_ACCEPT_EMPTY_DB": "1"},
     observation(db(DbState.EMPTY), volume(one_key=KEY, service_auth=ALL_70, ssh_key=True)),
     EXIT_OK, None),
    ("one_auth alone (onerun writes it before a bootstrap), DB empty",
     {}, observation(db(DbState.EMPTY), volume(one_auth="x")), EXIT_OK, None),
    ("completed start recorded, DB empty",
     {}, observation(db(DbState.EMPTY), volume(one_key=KEY, one_auth="x", record="7.0.2")),
     EXIT_REFUSED, "ONERUN_ACCEPT_EMPTY_DB"),
    ("completed start recorded, DB empty, operator accepts",
     {"ONERUN_ACCEPT_EMPTY_DB": "1"},
     observation(db(DbState.EMPTY), volume(one_key=KEY, one_auth="x", record="7.0.2")),
     EXIT_OK, None),
    ("one_key missing, DB bootstrapped",
     {}, observation(db(DbState.BOOTSTRAPPED), volume(one_auth=PASSWORD, service_auth=ALL_70)),
     EXIT_REFUSED, "one_key"),
    ("one_key on the volume empty, DB bootstrapped",
     {}, observation(db(DbState.BOOTSTRAPPED), volume(one_key="", one_auth=PASSWORD,
                                                      service_auth=ALL_70)),
     EXIT_REFUSED, "one_key"),
    ("one_key on the volume shorter than 32 characters, DB bootstrapped",
     {}, observation(db(DbState.BOOTSTRAPPED), volume(one_key="k" * 31, one_auth=PASSWORD,
                                                      service_auth=ALL_70)),
     EXIT_REFUSED, "32"),
    ("partial tables", {}, observation(db(DbState.PARTIAL_TABLES), volume(one_key=KEY)),
     EXIT_REFUSED, "restore a backup"),
    ("partial users with another installation's files",
     {}, observation(db(DbState.PARTIAL_USERS), volume(one_key=KEY, service_auth=ALL_70)),
     EXIT_REFUSED, "ONERUN_ACCEPT_EMPTY_DB"),
    ("partial users on a volume that ran a cloud",
     {}, observation(db(DbState.PARTIAL_USERS), volume(record="7.0.2")),
     EXIT_REFUSED, "ONERUN_ACCEPT_EMPTY_DB"),
    ("partial users, nothing on the volume", {},
     observation(db(DbState.PARTIAL_USERS), volume()), EXIT_OK, None),
    ("wrong ONEADMIN_PASSWORD, DB bootstrapped",
     {"ONEADMIN_PASSWORD": "not-the-password"},
     observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                  service_auth=ALL_70)),
     EXIT_REFUSED, "ONEADMIN_PASSWORD"),
    ("restart of a healthy bootstrapped volume",
     {"ONEADMIN_PASSWORD": PASSWORD},
     observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                  service_auth=ALL_70, record="7.0.2")),
     EXIT_OK, None),
    ("one_auth missing, no password, DB bootstrapped",
     {}, observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, service_auth=ALL_70)),
     EXIT_REFUSED, "ONEADMIN_PASSWORD"),
    ("ONE_KEY differs from the volume's",
     {"ONE_KEY": "z" * 40},
     observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD)),
     EXIT_REFUSED, "ONE_KEY"),
    ("DB newer than the image",
     {}, observation(db(DbState.BOOTSTRAPPED, version="7.4.0"),
                     volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70)),
     EXIT_REFUSED, "7.4.x"),
    ("an oned already runs", {},
     observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                  service_auth=ALL_70), lock=True,
                 oned="/var/lock/one/one exists and oned runs (pid 42)"),
     EXIT_REFUSED, "pid 42"),
    ("system hostname does not resolve, no HOSTNAME", {},
     observation(db(DbState.EMPTY), volume(),
                 hostname=HostnameFact(None, "pod-0.invalid", None, "Name or service not known")),
     EXIT_REFUSED, "pod-0.invalid"),
    ("system hostname resolves", {},
     observation(db(DbState.EMPTY), volume(), hostname=HostnameFact(None, "pod-0", "pod-0", None)),
     EXIT_OK, None),
    ("HOSTNAME in oned.conf: oned looks nothing up", {"OPENNEBULA_HOSTNAME": "one.example"},
     observation(db(DbState.EMPTY), volume(),
                 hostname=HostnameFact("one.example", "pod-0.invalid", None, None)),
     EXIT_OK, None),
    ("a restore did not complete", {},
     observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                  restore_failed="onedb upgrade failed")),
     EXIT_REFUSED, "onerun restore"),
]


@pytest.mark.parametrize(("env", "obs", "exit_code", "needle"),
                         [row[1:] for row in MATRIX], ids=[row[0] for row in MATRIX])
def test_fault_matrix(env: dict[str, str], obs: Observation, exit_code: int,
                      needle: str | None) -> None:
    decision = decide(settings(**env), obs, LAYOUT)
    plan = Plan(actions=decision.actions, refusal=decision.refusal)
    assert plan.exit_code == exit_code
    if needle is not None:
        assert decision.refusal is not None
        assert needle in decision.refusal.reason + decision.refusal.fix
    else:
        assert decision.refusal is None


def test_unresolvable_hostname_refusal_names_the_fixes() -> None:
    fact = HostnameFact(None, "pod-0.invalid", None, "Name or service not known")
    decision = decide(settings(), observation(db(DbState.EMPTY), volume(), hostname=fact),
                      LAYOUT)
    assert decision.refusal is not None
    assert "Name or service not known" in decision.refusal.reason
    for fix in ("OPENNEBULA_HOSTNAME", "--add-host pod-0.invalid:", "hostAliases"):
        assert fix in decision.refusal.fix
    assert not [a for a in decision.actions if isinstance(a, WriteFile | RemoveFile)]


def test_hostname_check_is_in_the_plan() -> None:
    fact = HostnameFact(None, "pod-0", "pod-0.cluster.local", None)
    decision = decide(settings(), observation(db(DbState.EMPTY), volume(), hostname=fact),
                      LAYOUT)
    checks = {a.name: a for a in decision.actions if isinstance(a, Check)}
    assert checks["hostname"].result == "ok"
    assert "pod-0.cluster.local" in checks["hostname"].detail


def test_unresolvable_hostname_is_a_note_in_maintenance_mode() -> None:
    fact = HostnameFact(None, "pod-0.invalid", None, "Name or service not known")
    decision = decide(settings(ONERUN_MAINTENANCE="1"),
                      observation(db(DbState.EMPTY), volume(), hostname=fact), LAYOUT)
    assert decision.refusal is None
    assert any(isinstance(a, Check) and "pod-0.invalid" in a.detail for a in decision.actions)


def _writes(decision: Any) -> dict[Path, WriteFile]:
    return {a.path: a for a in decision.actions if isinstance(a, WriteFile)}


def _removes(decision: Any) -> set[Path]:
    return {a.path for a in decision.actions if isinstance(a, RemoveFile)}


def test_refusal_applies_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    obs = observation(db(DbState.PARTIAL_TABLES), volume())
    decision = decide(settings(), obs, layout)
    plan = Plan(actions=decision.actions, refusal=decision.refusal)
    with pytest.raises(Exception, match="refusing to start") as info:
        plan.apply(_ctx(layout))
    assert getattr(info.value, "exit_code", None) == EXIT_REFUSED
    assert list(tmp_path.iterdir()) == []


def _ctx(layout: Layout) -> Any:
    from onerun.plan import ApplyContext

    return ApplyContext(layout, 0, 0, lambda message: None)


def test_fresh_install_generates_a_password_and_never_shows_it() -> None:
    decision = decide(settings(), observation(db(DbState.EMPTY), volume()), LAYOUT,
                      new_password=lambda: "Generated-Canary-123")
    one_auth = _writes(decision)[LAYOUT.one_auth]
    assert one_auth.content == b"oneadmin:Generated-Canary-123\n"
    assert one_auth.mode == 0o600 and one_auth.sensitive
    described = str([action.describe() for action in decision.actions])
    assert "Generated-Canary-123" not in described
    assert str(LAYOUT.one_auth) in one_auth.describe()["why"]


def test_generated_password_uses_the_allowed_alphabet() -> None:
    password = generate_password()
    assert len(password) == GENERATED_PASSWORD_LENGTH
    assert set(password) <= set(PASSWORD_ALPHABET)
    settings(ONEADMIN_PASSWORD=password)  # passes the same validation as a given password


def test_bootstrap_removes_only_leftover_service_auth_files() -> None:
    obs = observation(db(DbState.EMPTY),
                      volume(one_key=KEY, one_auth="x", began=True,
                             service_auth=("sunstone_auth", "onegate_auth")))
    decision = decide(settings(), obs, LAYOUT)
    assert _removes(decision) >= {LAYOUT.service_auth("sunstone_auth"),
                                  LAYOUT.service_auth("onegate_auth")}
    assert LAYOUT.one_key not in _removes(decision)
    assert LAYOUT.service_auth("oneflow_auth") not in _removes(decision)
    # The one_auth already on the volume is kept when no password is given.
    assert LAYOUT.one_auth not in _writes(decision)


def test_bootstrapped_start_keeps_service_auth_files() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED),
                      volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70, record="7.0.2"))
    decision = decide(settings(ONEADMIN_PASSWORD=PASSWORD), obs, LAYOUT)
    assert not any(path.name.endswith("_auth") for path in _removes(decision))
    assert not decision.heal_service_auth
    assert decision.record_start == ("7.0.2", "7.0.0")


def test_missing_service_auth_file_is_copied_from_a_present_one() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED),
                      volume(one_key=KEY, one_auth=PASSWORD, service_auth=("sunstone_auth",)))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None
    assert not decision.heal_service_auth  # running services keep serveradmin's secret
    writes = _writes(decision)
    for name in ("onegate_auth", "oneflow_auth"):
        write = writes[LAYOUT.service_auth(name)]
        assert write.content == b"serveradmin:s3cret\n"
        assert write.mode == 0o600 and write.sensitive


def test_all_service_auth_files_lost_are_healed_after_oned_answers() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None
    assert decision.heal_service_auth
    assert not any(path.name.endswith("_auth") and path != LAYOUT.one_auth
                   for path in _writes(decision))


def test_pv_lost_recovers_with_key_and_password() -> None:
    """The database keeps the key's fingerprint (recorded by an earlier start): with the
    right ONE_KEY and password a lost volume comes back by itself."""
    decision = decide(settings(ONEADMIN_PASSWORD=PASSWORD, ONE_KEY=KEY),
                      observation(db(DbState.BOOTSTRAPPED, fingerprint=fingerprint(KEY)),
                                  volume()), LAYOUT)
    assert decision.refusal is None
    writes = _writes(decision)
    assert writes[LAYOUT.one_key].content == f"{KEY}\n".encode()
    assert writes[LAYOUT.one_auth].content == f"oneadmin:{PASSWORD}\n".encode()
    assert decision.heal_service_auth


def test_older_db_plans_an_upgrade_to_the_image_version() -> None:
    image = ImageVersions(Version.parse("7.4.0"), Version.parse("7.4.0"), Version.parse("7.4.0"))
    obs = observation(db(DbState.BOOTSTRAPPED, version="7.0.0"),
                      volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70), image=image)
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None
    assert decision.upgrade is not None
    assert (decision.upgrade.db_version, decision.upgrade.target_version) == ("7.0.0", "7.4.0")
    assert decision.record_start == ("7.4.0", "7.4.0")
    # 7.4 uses oneform_auth and oneks_auth too: copied from the 7.0 files, no reset needed.
    assert not decision.heal_service_auth
    assert {LAYOUT.service_auth("oneform_auth"), LAYOUT.service_auth("oneks_auth")} <= set(
        _writes(decision))


def test_versions_compare_numerically() -> None:
    image = ImageVersions(Version.parse("7.10.0"), Version.parse("7.10.0"),
                          Version.parse("7.10.0"))
    obs = observation(db(DbState.BOOTSTRAPPED, version="7.4.0"),
                      volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70), image=image)
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None and decision.upgrade is not None


def test_absent_image_versions_skip_the_check() -> None:
    image = ImageVersions(None, None, None)
    obs = observation(db(DbState.BOOTSTRAPPED, version="7.0.0"),
                      volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70), image=image)
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None and decision.upgrade is None
    skipped = [a for a in decision.actions if isinstance(a, Check) and a.result == "skipped"]
    assert any(check.name == "db version" for check in skipped)


def test_stale_lock_is_removed_only_when_no_oned_runs() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70), lock=True)
    assert LAYOUT.lock_file in _removes(decide(settings(), obs, LAYOUT))


def test_remotes_refreshed_only_when_their_release_differs_from_the_image() -> None:
    same = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                        service_auth=ALL_70, record="7.0.2"))
    assert not any(isinstance(a, ReplaceTree) for a in decide(settings(), same, LAYOUT).actions)
    # The stamp in the tree counts, not the start record: an image rolled back after a
    # failed upgrade puts its own remotes back.
    newer = observation(db(DbState.BOOTSTRAPPED),
                        volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70,
                               record="7.0.2", remotes_stamp="7.4.0+0123456789abcdef"))
    trees = [a for a in decide(settings(), newer, LAYOUT).actions if isinstance(a, ReplaceTree)]
    assert len(trees) == 1 and trees[0].stamp == STAMP_70
    unstamped = observation(db(DbState.BOOTSTRAPPED),
                            volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70,
                                   record="7.0.2", remotes_stamp=None))
    assert any(isinstance(a, ReplaceTree) for a in decide(settings(), unstamped, LAYOUT).actions)
    missing = dataclasses.replace(same, volume=dataclasses.replace(same.volume,
                                                                   remotes_present=False))
    assert any(isinstance(a, ReplaceTree) for a in decide(settings(), missing, LAYOUT).actions)


def test_maintenance_records_the_flag_and_no_start() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70))
    decision = decide(settings(ONERUN_MAINTENANCE="1"), obs, LAYOUT)
    assert LAYOUT.maintenance_flag in _writes(decision)
    assert decision.record_start is None
    normal = decide(settings(), obs, LAYOUT)
    assert LAYOUT.maintenance_flag in _removes(normal)


def test_unwritable_volume_is_refused() -> None:
    obs = observation(db(DbState.EMPTY), volume())
    obs = dataclasses.replace(obs, processes=dataclasses.replace(
        obs.processes, var_lib_one_writable_by_oneadmin=False))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is not None and "fsGroup" in decision.refusal.fix


def test_root_gives_a_foreign_sqlite_db_and_secrets_to_oneadmin() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70))
    vol = dataclasses.replace(
        obs.volume, sqlite_db=OwnedPath(LAYOUT.sqlite_db, 0, 0, 0o644),
        secret_files=(OwnedPath(LAYOUT.one_key, 0, 0, 0o600),
                      OwnedPath(LAYOUT.one_auth, 9869, 9869, 0o600)))
    as_root = dataclasses.replace(obs, volume=vol, processes=dataclasses.replace(
        obs.processes, running_as_root=True))
    fixed = {a.path: a for a in decide(settings(), as_root, LAYOUT).actions
             if isinstance(a, EnsureFileOwner)}
    assert set(fixed) == {LAYOUT.sqlite_db, LAYOUT.one_key}
    assert fixed[LAYOUT.sqlite_db].mode == 0o600
    as_oneadmin = dataclasses.replace(as_root, processes=obs.processes)
    assert not any(isinstance(a, EnsureFileOwner)
                   for a in decide(settings(), as_oneadmin, LAYOUT).actions)


def test_unwritable_sqlite_db_is_refused_for_a_non_root_start() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD))
    obs = dataclasses.replace(obs, processes=dataclasses.replace(
        obs.processes, sqlite_db_writable_by_oneadmin=False))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is not None and "one.db" in decision.refusal.reason


def test_one_auth_not_matching_the_db_without_a_password_is_refused() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth="stale-password",
                                                       service_auth=ALL_70))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is not None
    assert "ONEADMIN_PASSWORD" in decision.refusal.fix


def test_partial_users_of_another_version_is_refused() -> None:
    image = ImageVersions(Version.parse("7.4.0"), Version.parse("7.4.0"), Version.parse("7.4.0"))
    obs = observation(db(DbState.PARTIAL_USERS, version="7.0.0"),
                      volume(one_key=KEY, began=True), image=image)
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is not None and "7.0.0" in decision.refusal.fix


MAINTENANCE_REFUSALS = [row for row in MATRIX if row[3] == EXIT_REFUSED]


@pytest.mark.parametrize(("env", "obs"), [(row[1], row[2]) for row in MAINTENANCE_REFUSALS],
                         ids=[row[0] for row in MAINTENANCE_REFUSALS])
def test_maintenance_turns_every_refusal_into_a_note(env: dict[str, str],
                                                     obs: Observation) -> None:
    """The container stays up so the operator can run `onerun restore` and the like."""
    decision = decide(settings(ONERUN_MAINTENANCE="1", **env), obs, LAYOUT)
    assert decision.refusal is None
    assert decision.upgrade is None and not decision.heal_service_auth
    assert decision.record_start is None
    notes = [a for a in decision.actions if isinstance(a, Check) and a.name == "start"]
    assert len(notes) == 1 and "would refuse" in notes[0].detail
    assert LAYOUT.maintenance_flag in _writes(decision)
    # Nothing but directories and the flag is changed.
    assert all(isinstance(a, EnsureDirectory | Check) or a == _writes(decision).get(
        LAYOUT.maintenance_flag) for a in decision.actions)


def test_maintenance_postpones_a_schema_upgrade() -> None:
    image = ImageVersions(Version.parse("7.4.0"), Version.parse("7.4.0"), Version.parse("7.4.0"))
    obs = observation(db(DbState.BOOTSTRAPPED, version="7.0.0"),
                      volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70), image=image)
    decision = decide(settings(ONERUN_MAINTENANCE="1"), obs, LAYOUT)
    assert decision.refusal is None and decision.upgrade is None
    assert any(isinstance(a, Check) and a.name == "schema upgrade" for a in decision.actions)


def test_stale_or_empty_service_auth_files_are_rewritten_from_a_good_one() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70))
    vol = dataclasses.replace(obs.volume, service_auth={
        "sunstone_auth": Secret("serveradmin:s3cret\n"),
        "onegate_auth": Secret(""),                          # emptied
        "oneflow_auth": Secret("serveradmin:old-secret\n"),  # from before a DB restore
    })
    decision = decide(settings(), dataclasses.replace(obs, volume=vol), LAYOUT)
    writes = _writes(decision)
    for name in ("onegate_auth", "oneflow_auth"):
        assert writes[LAYOUT.service_auth(name)].content == b"serveradmin:s3cret\n"
    assert LAYOUT.service_auth("sunstone_auth") not in writes
    assert not decision.heal_service_auth


def test_no_service_auth_file_matching_the_db_means_a_reset_through_the_api() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70,
                                                       serveradmin="serveradmin:old\n"))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.heal_service_auth
    # the services wait for their file: the wrong ones go, post-start writes them anew
    assert {LAYOUT.service_auth(name) for name in ALL_70} <= _removes(decision)


def test_maintenance_on_an_empty_db_leaves_the_bootstrap_preparation_alone() -> None:
    obs = observation(db(DbState.EMPTY), volume(one_key=KEY, service_auth=ALL_70))
    decision = decide(settings(ONERUN_MAINTENANCE="1"), obs, LAYOUT)
    assert decision.refusal is None
    assert _removes(decision) == set()  # leftover auth files stay for the operator
    assert set(_writes(decision)) == {LAYOUT.maintenance_flag}  # no generated one_auth


def test_maintenance_with_an_unreadable_db_or_volume_still_comes_up() -> None:
    unreadable = observation(db(DbState.UNREADABLE), volume())
    decision = decide(settings(ONERUN_MAINTENANCE="1"), unreadable, LAYOUT)
    assert decision.refusal is None
    assert any(isinstance(a, Check) and "could not be read" in a.detail
               for a in decision.actions)
    # outside maintenance the same observation is a refusal (observe never yields it there)
    assert decide(settings(), unreadable, LAYOUT).refusal is not None
    locked = dataclasses.replace(unreadable, processes=dataclasses.replace(
        unreadable.processes, var_lib_one_writable_by_oneadmin=False))
    kept = decide(settings(ONERUN_MAINTENANCE="1"), locked, LAYOUT).actions
    dirs = [a.path for a in kept if isinstance(a, EnsureDirectory)]
    assert dirs and not any(path.is_relative_to(LAYOUT.var_lib_one) for path in dirs)


def test_an_empty_one_key_is_no_key() -> None:
    """An empty file holds nothing: with ONE_KEY it is written, without, on a database that
    encrypted nothing yet, it goes so oned writes a key (it would use the empty one)."""
    empty = observation(db(DbState.EMPTY), volume(one_key="", began=True))
    given = decide(settings(ONE_KEY=KEY), empty, LAYOUT)
    assert given.refusal is None
    assert _writes(given)[LAYOUT.one_key].content == f"{KEY}\n".encode()
    fresh = decide(settings(), empty, LAYOUT)
    assert fresh.refusal is None and LAYOUT.one_key in _removes(fresh)
    short = decide(settings(ONE_KEY=KEY), observation(db(DbState.EMPTY),
                                                      volume(one_key="short", began=True)),
                   LAYOUT)
    assert short.refusal is not None and LAYOUT.one_key not in _writes(short)


# -- the empty-database guard: whose leftovers are these? ----------------------------------


def test_an_interrupted_bootstrap_onerun_began_is_cleaned_up() -> None:
    obs = observation(db(DbState.EMPTY), volume(one_key=KEY, one_auth="x", began=True,
                                                service_auth=ALL_70, ssh_key=True))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None
    assert {LAYOUT.service_auth(name) for name in ALL_70} <= _removes(decision)
    assert LAYOUT.one_key not in _removes(decision)


def test_a_bootstrap_is_recorded_before_anything_it_leaves() -> None:
    decision = decide(settings(ONE_KEY=KEY), observation(db(DbState.EMPTY), volume()), LAYOUT)
    paths = [a.path for a in decision.actions if isinstance(a, WriteFile | RemoveFile)]
    marker = _writes(decision)[LAYOUT.bootstrap_marker]
    assert paths.index(LAYOUT.bootstrap_marker) < paths.index(LAYOUT.one_key)
    assert paths.index(LAYOUT.bootstrap_marker) < paths.index(LAYOUT.one_auth)
    assert marker.only_if_absent and marker.mode == 0o600
    assert str(LAYOUT.sqlite_db).encode() in marker.content


def test_the_bootstrap_record_goes_once_the_database_is_bootstrapped() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70, began=True))
    decision = decide(settings(), obs, LAYOUT)
    assert decision.refusal is None and LAYOUT.bootstrap_marker in _removes(decision)
    assert LAYOUT.bootstrap_marker not in _writes(decision)


@pytest.mark.parametrize(("evidence", "needle"), [
    ({"datastores": ("1", "100")}, "datastores with content"),
    ({"service_auth": ("onegate_auth",)}, "onegate_auth"),
])
def test_other_traces_of_a_cloud_count(evidence: dict[str, Any], needle: str) -> None:
    decision = decide(settings(), observation(db(DbState.EMPTY), volume(**evidence)), LAYOUT)
    assert decision.refusal is not None
    assert needle in decision.refusal.reason
    assert "ONERUN_ACCEPT_EMPTY_DB=1" in decision.refusal.fix


def test_a_damaged_start_record_counts_and_says_so() -> None:
    vol = dataclasses.replace(volume(), start_record=StartRecord(
        None, None, 0.0, unreadable="last-start.json is unreadable (truncated)"))
    decision = decide(settings(), observation(db(DbState.EMPTY), vol), LAYOUT)
    assert decision.refusal is not None and "truncated" in decision.refusal.reason
    assert decide(settings(ONERUN_ACCEPT_EMPTY_DB="1"),
                  observation(db(DbState.EMPTY), vol), LAYOUT).refusal is None


def test_an_sqlite_database_on_the_volume_counts_for_mariadb() -> None:
    vol = dataclasses.replace(volume(), sqlite_db=OwnedPath(LAYOUT.sqlite_db, 9869, 9869, 0o600))
    mysql = {"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": "Db-Pass-1"}
    decision = decide(settings(**mysql), observation(db(DbState.EMPTY), vol), LAYOUT)
    assert decision.refusal is not None and "one.db" in decision.refusal.reason


# -- ONE_KEY beside a bootstrapped database: it must be the database's key -------------------

OTHER_KEY = "o" * 64


def encrypt_as_oned(key: str, plain: str) -> str:
    """oned's aes256cbc_encrypt (src/common/NebulaUtil.cc): first 32 bytes of the key, zero
    IV, PKCS#7, base64."""
    import base64

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key.encode()[:32]), modes.CBC(bytes(16))).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def key_less(**db_facts: Any) -> Observation:
    return observation(db(DbState.BOOTSTRAPPED, **db_facts),
                       volume(one_auth=PASSWORD, service_auth=ALL_70))


@pytest.mark.parametrize(("env", "obs", "written", "needle"), [
    ({"ONE_KEY": KEY}, key_less(fingerprint=fingerprint(KEY)), True, None),
    ({"ONE_KEY": OTHER_KEY}, key_less(fingerprint=fingerprint(KEY)), False, "fingerprint"),
    ({"ONE_KEY": KEY}, key_less(encrypted=(encrypt_as_oned(KEY, "ssh-key"),)), True, None),
    ({"ONE_KEY": OTHER_KEY}, key_less(encrypted=(encrypt_as_oned(KEY, "ssh-key"),)), False,
     "decrypts none"),
    # trusting a key the database disproves is no way out
    ({"ONE_KEY": OTHER_KEY, "ONERUN_TRUST_ONE_KEY": "1"},
     key_less(encrypted=(encrypt_as_oned(KEY, "ssh-key"),)), False, "decrypts none"),
    ({"ONE_KEY": OTHER_KEY, "ONERUN_TRUST_ONE_KEY": "1"},
     key_less(fingerprint=fingerprint(KEY)), False, "fingerprint"),
    # nothing to tell: refused unless trusted
    ({"ONE_KEY": KEY}, key_less(), False, "ONERUN_TRUST_ONE_KEY=1"),
    ({"ONE_KEY": KEY, "ONERUN_TRUST_ONE_KEY": "1"}, key_less(), True, None),
    # values oned did not encrypt (plain text, not whole AES blocks) prove nothing
    ({"ONE_KEY": KEY}, key_less(encrypted=("plain-restic-password",)), False,
     "ONERUN_TRUST_ONE_KEY=1"),
    # a key that decrypts one value is the key, whatever else is in there
    ({"ONE_KEY": KEY}, key_less(encrypted=(encrypt_as_oned(OTHER_KEY, "x"),
                                           encrypt_as_oned(KEY, "y"))), True, None),
], ids=["fingerprint matches", "fingerprint differs", "decrypts", "decrypts nothing",
        "trusted but decrypts nothing", "trusted but fingerprint differs", "unprovable",
        "unprovable, trusted", "plain values only", "one of two decrypts"])
def test_one_key_for_a_key_less_volume(env: dict[str, str], obs: Observation, written: bool,
                                       needle: str | None) -> None:
    decision = decide(settings(**env), obs, LAYOUT)
    assert (LAYOUT.one_key in _writes(decision)) is written
    if needle is None:
        assert decision.refusal is None
    else:
        assert decision.refusal is not None
        assert Plan(actions=[], refusal=decision.refusal).exit_code == EXIT_REFUSED
        assert needle in decision.refusal.reason + decision.refusal.fix
        assert decision.actions == [] or not _writes(decision).get(LAYOUT.one_key)
    text = str([a.describe() for a in decision.actions]) + str(decision.refusal)
    assert KEY not in text and OTHER_KEY not in text


def test_the_volume_s_own_key_must_match_a_recorded_fingerprint() -> None:
    theirs = observation(db(DbState.BOOTSTRAPPED, fingerprint=fingerprint(OTHER_KEY)),
                         volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70))
    decision = decide(settings(), theirs, LAYOUT)
    assert decision.refusal is not None and str(LAYOUT.one_key) in decision.refusal.reason
    ours = observation(db(DbState.BOOTSTRAPPED, fingerprint=fingerprint(KEY)),
                       volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70))
    assert decide(settings(), ours, LAYOUT).refusal is None


def test_the_key_fingerprint_is_recorded_where_the_database_lacks_it() -> None:
    healthy = volume(one_key=KEY, one_auth=PASSWORD, service_auth=ALL_70)
    assert decide(settings(), observation(db(DbState.BOOTSTRAPPED), healthy),
                  LAYOUT).record_key_fingerprint
    assert decide(settings(), observation(db(DbState.EMPTY), volume()),
                  LAYOUT).record_key_fingerprint
    recorded = db(DbState.BOOTSTRAPPED, fingerprint=fingerprint(KEY))
    assert not decide(settings(), observation(recorded, healthy), LAYOUT).record_key_fingerprint
    slave = db(DbState.BOOTSTRAPPED, slave=True)
    assert not decide(settings(), observation(slave, healthy), LAYOUT).record_key_fingerprint
    assert not decide(settings(ONERUN_MAINTENANCE="1"),
                      observation(db(DbState.BOOTSTRAPPED), healthy),
                      LAYOUT).record_key_fingerprint


ZONE_MEMBER = {"ONERUN_HA_MEMBERS": "one-0.h:2640,one-1.h:2640,one-2.h:2640",
               "ONERUN_HA_ADDRESS": "one-1.h:2640", "ONEADMIN_PASSWORD": PASSWORD,
               "ONE_KEY": KEY}


def test_in_a_zone_no_service_auth_file_matching_the_db_is_refused_not_reset() -> None:
    """A new serveradmin secret set through a member's API is the zone's: every other
    member's services would then hold a stale one. The fix is a copy from a member."""
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70,
                                                       serveradmin="serveradmin:old\n"))
    decision = decide(settings(**ZONE_MEMBER), obs, LAYOUT)
    assert decision.refusal is not None
    assert not decision.heal_service_auth
    assert "serveradmin" in decision.refusal.reason
    assert "another member" in decision.refusal.fix
    assert _removes(decision) == set()  # nothing removed on a refusal


def test_in_a_zone_a_lost_service_auth_file_is_still_copied_from_a_good_one() -> None:
    obs = observation(db(DbState.BOOTSTRAPPED), volume(one_key=KEY, one_auth=PASSWORD,
                                                       service_auth=ALL_70[:1]))
    decision = decide(settings(**ZONE_MEMBER), obs, LAYOUT)
    assert decision.refusal is None and not decision.heal_service_auth
    assert {LAYOUT.service_auth(name) for name in ALL_70[1:]} <= set(_writes(decision))
