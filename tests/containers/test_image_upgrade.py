"""Real schema upgrades between OpenNebula releases (the tier's previous and current images,
7.0.0 and 7.4.0 here): objects, logins, encrypted attributes and operators' remotes edits
survive; a downgrade, a failing migrator and a SIGTERM in the middle of onedb are handled
without losing or half-migrating anything."""

from __future__ import annotations

import re
from typing import Any

import pytest
import tier
from conftest import REQUIRE, TierImages

from ci import boot_test

READY = 600.0  # a schema upgrade on a loaded 2-core machine
PASSPHRASE = "upgrade-me-unchanged"  # an encrypted USER attribute (oned.conf USER_ENCRYPTED_ATTR)
# Enough quota rows for several seconds of migration on these machines.
BULK_SQL = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000) "
            "INSERT INTO user_quotas (user_oid, body) SELECT 1000 + i, "
            "(SELECT body FROM user_quotas WHERE user_oid = 0) FROM n")
KVMRC_LINE = "# an operator setting kept across upgrades"


@pytest.fixture
def releases(images: TierImages) -> tuple[str, str]:
    """(previous, current): only a declared first release may go without a previous one."""
    if images.previous is None:
        reason = boot_test.Images.from_env().why_no_upgrade_test(REQUIRE)
        if reason is None:
            pytest.fail("BOOT_PREVIOUS_IMAGE is not set: no released image to upgrade from")
        pytest.skip(reason)
    return images.previous, images.current


def populate(box: Any, password: str) -> dict[str, Any]:
    """Objects of every kind a user cares about, made through the API of the old release."""
    user = int(tier.api(box, password, "one.user.allocate", "alice", "Alice-pass-1", "core", []))
    tier.api(box, password, "one.user.update", user, f'SSH_PASSPHRASE="{PASSPHRASE}"', 1)
    template = int(tier.api(box, password, "one.template.allocate",
                            'NAME="web"\nCPU="0.5"\nMEMORY="128"\n'))
    network = int(tier.api(box, password, "one.vn.allocate",
                           'NAME="lan"\nVN_MAD="dummy"\nBRIDGE="br0"\n'
                           'AR=[TYPE="IP4",IP="192.0.2.10",SIZE="16"]\n', -1))
    host = int(tier.api(box, password, "one.host.allocate", "node-1", "kvm", "kvm", -1))
    return {"user": user, "template": template, "network": network, "host": host}


def assert_everything_is_there(box: Any, password: str, ids: dict[str, Any]) -> None:
    assert "<NAME>alice</NAME>" in str(tier.api(box, password, "one.user.info", ids["user"]))
    decrypted = str(tier.api(box, password, "one.user.info", ids["user"], True))
    assert PASSPHRASE in decrypted, "the encrypted attribute no longer decrypts"
    assert "<NAME>web</NAME>" in str(tier.api(box, password, "one.template.info",
                                              ids["template"]))
    assert "<NAME>lan</NAME>" in str(tier.api(box, password, "one.vn.info", ids["network"]))
    assert "<NAME>node-1</NAME>" in str(tier.api(box, password, "one.host.info", ids["host"]))


def stop(box: Any) -> None:
    box.kill(signal="SIGTERM")
    code, _ = tier.wait_exit(box, tier.STOP_BUDGET + 30)
    assert code == 0, tier.logs(box)[-3000:]


def sqlite_dump(engine: tier.Engine, image: str, volume: str) -> str:
    return engine.run_helper("sqlite3 /v/one.db .dump", {volume: "/v"}, image=image)


def mariadb_dump(db: Any, database: tier.Database) -> str:
    root = database.files["/etc/mariadb-secret/root-password"].content.decode()
    result = db.exec_run(["mariadb-dump", "--no-defaults", "-uroot", "--skip-dump-date",
                          "--single-transaction", database.env["MARIADB_DATABASE"]],
                         environment={"MYSQL_PWD": root})
    assert result.exit_code == 0, result.output[-2000:]
    return str(result.output.decode())


def backups(box_or_helper: tier.Engine, volume: str) -> list[str]:
    listing = box_or_helper.run_helper("ls -1 /v/backups 2>/dev/null || true", {volume: "/v"})
    return sorted(listing.split())


def edit_kvmrc(box: Any) -> None:
    kvmrc = "/var/lib/one/remotes/etc/vmm/kvm/kvmrc"
    tier.exec_ok(box, ["sh", "-c", f"echo '{KVMRC_LINE}' >> {kvmrc}"])


def operator_edit_kept(engine: tier.Engine, volume: str) -> bool:
    """The operator's line survives in the live remotes or in a copy onerun kept on the volume."""
    found = engine.run_helper(f"grep -rlF \"{KVMRC_LINE}\" /v || true", {volume: "/v"})
    return bool(found.strip())


def test_sqlite_upgrade_keeps_everything_and_a_downgrade_is_refused(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, releases: tuple[str, str]
) -> None:
    old, new = releases
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    volume = engine.volume()
    box = tier.start_ready(engine, old, pod, front, volume, timeout=READY)
    ids = populate(box, front.password)
    edit_kvmrc(box)
    stop(box)

    box = tier.start_ready(engine, new, pod, front, volume, timeout=READY)
    text = tier.logs(box)
    assert f"upgraded the database to {images.current_version}" in text, text[-3000:]
    assert_everything_is_there(box, front.password, ids)
    version = tier.exec_ok(box, ["cat", "/var/lib/one/remotes/VERSION"]).strip()
    assert version == images.current_version
    assert len(backups(engine, volume)) == 1
    stop(box)
    assert operator_edit_kept(engine, volume), "the operator's kvmrc edit is lost"

    before = sqlite_dump(engine, new, volume)
    box = engine.start(tier.frontend_container(engine, old, pod, front, volume))
    code, _ = tier.wait_exit(box, 120)
    assert code == 3, tier.logs(box)[-3000:]
    assert images.current_version in tier.logs(box)
    assert sqlite_dump(engine, new, volume) == before


def test_mariadb_upgrade_keeps_everything_and_a_downgrade_is_refused(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, releases: tuple[str, str]
) -> None:
    old, new = releases
    front, database = tier.chart_install({}, DB_HOST="127.0.0.1")
    assert database is not None
    db = tier.start_mariadb(engine, images.mariadb, pod, database)
    volume = engine.volume()
    box = tier.start_ready(engine, old, pod, front, volume, timeout=READY)
    ids = populate(box, front.password)
    stop(box)

    box = tier.start_ready(engine, new, pod, front, volume, timeout=READY)
    assert f"upgraded the database to {images.current_version}" in tier.logs(box)
    assert_everything_is_there(box, front.password, ids)
    assert database.password not in tier.logs(box)
    stop(box)

    before = mariadb_dump(db, database)
    box = engine.start(tier.frontend_container(engine, old, pod, front, volume))
    code, _ = tier.wait_exit(box, 120)
    assert code == 3, tier.logs(box)[-3000:]
    assert mariadb_dump(db, database) == before


def test_a_failing_migrator_is_restored_and_refused_again_without_losing_backups(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, releases: tuple[str, str]
) -> None:
    old, new = releases
    # Keep only one automatic backup: a failure path must prune nothing, manual backups least.
    front, database = tier.chart_install({}, DB_HOST="127.0.0.1", ONERUN_BACKUP_KEEP="1")
    assert database is not None
    db = tier.start_mariadb(engine, images.mariadb, pod, database)
    volume = engine.volume()
    box = tier.start_ready(engine, old, pod, front, volume, timeout=READY)
    stop(box)
    manual = tier.frontend_container(engine, old, pod, front, volume,
                                     entrypoint=["onerun", "backup"])
    code, _ = tier.wait_exit(engine.start(manual), 120)
    assert code == 0
    kept = backups(engine, volume)
    assert len(kept) == 1, kept
    # The 7.0 -> 7.2 migrator rebuilds user_quotas from each row's body: without that
    # column onedb upgrade fails half-way (src/onedb/local/7.0.0_to_7.2.0.rb, feature_951).
    root = database.files["/etc/mariadb-secret/root-password"].content.decode()
    result = db.exec_run(["mariadb", "--no-defaults", "-uroot", database.env["MARIADB_DATABASE"],
                          "-e", "ALTER TABLE user_quotas RENAME COLUMN body TO body_renamed"],
                         environment={"MYSQL_PWD": root})
    assert result.exit_code == 0, result.output
    before = mariadb_dump(db, database)

    refusals: list[str] = []
    for _ in range(2):
        box = engine.start(tier.frontend_container(engine, new, pod, front, volume))
        code, _ = tier.wait_exit(box, READY)
        text = tier.logs(box)
        assert code == 3, text[-3000:]
        assert database.password not in text and front.password not in text
        assert mariadb_dump(db, database) == before, "the database differs after the restore"
        refusals.append(re.sub(r"\d", "N", text.splitlines()[-1]))
        now = backups(engine, volume)
        assert now and set(kept) <= set(now), f"a backup was deleted: {kept} -> {now}"
        kept = now
    assert refusals[0] == refusals[1]


def test_sigterm_during_onedb_upgrade_leaves_a_database_the_next_start_upgrades(
    engine: tier.Engine, images: TierImages, pod: tier.Pod, releases: tuple[str, str]
) -> None:
    old, new = releases
    front = tier.chart_frontend({"database": {"type": "sqlite"}})
    volume = engine.volume()
    box = tier.start_ready(engine, old, pod, front, volume, timeout=READY)
    stop(box)
    # Quota rows of many users make the 7.0 -> 7.2 migrator (user_quotas, feature_951) take
    # seconds: long enough to be stopped in the middle.
    engine.run_helper(f'sqlite3 /v/one.db "{BULK_SQL}"', {volume: "/v"}, image=new)

    box = engine.start(tier.frontend_container(engine, new, pod, front, volume))
    tier.wait_for_log(box, "onedb upgrade", 300)
    box.kill(signal="SIGTERM")
    code, seconds = tier.wait_exit(box, 90)
    text = tier.logs(box)
    assert code == 143, text[-3000:]
    assert seconds <= 90 - tier.STOP_BUDGET, "the pod's grace period would SIGKILL it"
    last = text.strip().splitlines()[-1]
    assert "restored from" in last or "finished within" in last, last  # says which
    assert "restore-failed" not in text

    box = tier.start_ready(engine, new, pod, front, volume, timeout=READY)
    assert "<NAME>oneadmin</NAME>" in str(tier.api(box, front.password, "one.user.info", 0))
    plan = box.exec_run(["onerun", "start", "--dry-run"]).output.decode()
    assert f"matches the image ({images.current_version})" in plan, plan
