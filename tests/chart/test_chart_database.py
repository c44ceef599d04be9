"""Each database type: what onerun is told and what the chart deploys for it."""

from __future__ import annotations

import re

from chartlib import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    container,
    env,
    render,
    render_error,
    secret_item_behind,
    secret_value,
)
from ruamel.yaml import YAML


def test_sqlite_runs_embedded_with_no_database_server() -> None:
    rendered = render({"database": {"type": "sqlite"}})
    variables = env(container(rendered))
    assert variables["DB_BACKEND"] == "sqlite"
    assert not {"DB_HOST", "DB_PASSWORD_FILE", "DB_USER"} & variables.keys()
    assert rendered.names("StatefulSet") == {FULLNAME}
    assert f"{FULLNAME}-mariadb" not in rendered.names("Secret")
    volumes = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]["volumes"]
    assert "db-secret" not in {v["name"] for v in volumes}


def test_bundled_mariadb_is_the_default_on_the_official_image() -> None:
    rendered = render()
    name = f"{FULLNAME}-mariadb"
    db = container(rendered, name, "mariadb")
    assert re.fullmatch(r"docker\.io/library/mariadb:11\.4@sha256:[0-9a-f]{64}", db["image"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert db[probe]["exec"]["command"] == [
            "healthcheck.sh",
            "--connect",
            "--innodb_initialized",
        ]
    assert db["resources"]["requests"] and db["resources"]["limits"]
    sts = rendered.get("StatefulSet", name)
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert rendered.get("Service", name)["spec"]["ports"][0]["port"] == 3306

    # The passwords reach MariaDB as files, and onerun reads the same password file.
    db_env = env(db)
    assert "MARIADB_PASSWORD" not in db_env and "MARIADB_ROOT_PASSWORD" not in db_env
    assert db_env["MARIADB_USER"] == "oneadmin" and db_env["MARIADB_DATABASE"] == "opennebula"
    db_volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "secret")
    assert db_volume["secret"]["secretName"] == name
    keys = {i["path"]: i["key"] for i in db_volume["secret"]["items"]}
    assert db_env["MARIADB_PASSWORD_FILE"] == "/etc/mariadb-secret/password"

    one = env(container(rendered))
    assert one["DB_BACKEND"] == "mysql"
    assert one["DB_HOST"] == name
    assert (one["DB_USER"], one["DB_NAME"], one["DB_PORT"]) == ("oneadmin", "opennebula", "3306")
    assert secret_item_behind(rendered, one["DB_PASSWORD_FILE"]) == (name, keys["password"])
    assert len(secret_value(rendered, name, "mariadb-root-password")) >= 16


def test_external_database_with_a_password_stores_it_in_a_secret() -> None:
    rendered = render(
        {
            "database": {
                "type": "external",
                "external": {
                    "host": "db.example.com",
                    "port": 3307,
                    "name": "one",
                    "user": "cloud",
                    "password": "p4ss-word",
                },
            }
        }
    )
    one = env(container(rendered))
    assert (one["DB_BACKEND"], one["DB_HOST"], one["DB_PORT"]) == (
        "mysql",
        "db.example.com",
        "3307",
    )
    assert (one["DB_USER"], one["DB_NAME"]) == ("cloud", "one")
    secret, key = secret_item_behind(rendered, one["DB_PASSWORD_FILE"])
    assert secret == f"{FULLNAME}-db"
    assert secret_value(rendered, secret, key) == "p4ss-word"
    assert "p4ss-word" not in str(container(rendered)["env"])
    assert not any("mariadb" in n for n in rendered.names("StatefulSet"))


def test_external_database_with_existing_secret_renders_no_secret_of_its_own() -> None:
    rendered = render(
        {
            "database": {
                "type": "external",
                "external": {
                    "host": "10.1.2.3",
                    "existingSecret": "site-db",
                    "existingSecretPasswordKey": "pw",
                },
            }
        }
    )
    one = env(container(rendered))
    assert secret_item_behind(rendered, one["DB_PASSWORD_FILE"]) == ("site-db", "pw")
    assert rendered.names("Secret") == {FULLNAME}


def test_external_database_needs_a_host_and_a_password() -> None:
    no_host = render_error({"database": {"type": "external", "external": {"password": "x"}}})
    assert "/database/external/host" in no_host
    no_password = render_error({"database": {"type": "external", "external": {"host": "db"}}})
    assert "/database/external" in no_password
    assert "password" in no_password and "existingSecret" in no_password


def test_database_type_is_checked_by_the_schema() -> None:
    message = render_error({"database": {"type": "postgres"}})
    assert "/database/type" in message
    assert "'sqlite', 'mariadb', 'external'" in message


def test_sqlite_refuses_a_second_replica() -> None:
    """Two sqlite front-ends never share a database: a second replica would be half a Raft
    zone (tests/chart/test_chart_ha.py), refused as an even count."""
    message = render_error({"database": {"type": "sqlite"}, "replicaCount": 2})
    assert "replicaCount 2 is even" in message


def test_mariadb_existing_secret_is_used_by_both_pods() -> None:
    rendered = render(
        {
            "database": {
                "mariadb": {
                    "auth": {
                        "existingSecret": "mdb",
                        "existingSecretKeys": {"password": "u", "rootPassword": "r"},
                    }
                }
            }
        }
    )
    assert f"{FULLNAME}-mariadb" not in rendered.names("Secret")
    one = env(container(rendered))
    assert secret_item_behind(rendered, one["DB_PASSWORD_FILE"]) == ("mdb", "u")
    sts = rendered.get("StatefulSet", f"{FULLNAME}-mariadb")
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "secret")
    assert volume["secret"]["secretName"] == "mdb"
    assert {i["key"] for i in volume["secret"]["items"]} == {"u", "r"}


def test_release_namespace_is_used_for_in_cluster_names() -> None:
    hostname = env(container(render()))["OPENNEBULA_HOSTNAME"]
    assert hostname == f"$(POD_NAME).{FULLNAME}-headless.{NAMESPACE}.svc.cluster.local"


READ_COMMITTED = "--transaction-isolation=READ-COMMITTED"


def test_bundled_mariadb_runs_with_the_isolation_opennebula_asks_for() -> None:
    """OpenNebula's MySQL/MariaDB setup sets READ COMMITTED (docs.opennebula.io, Database
    Setup); the server default is REPEATABLE-READ."""
    db = container(render(), f"{FULLNAME}-mariadb", "mariadb")
    assert db["args"] == [READ_COMMITTED]
    extra = container(render({"database": {"mariadb": {"extraArgs": ["--max-connections=300"]}}}),
                      f"{FULLNAME}-mariadb", "mariadb")
    assert extra["args"] == [READ_COMMITTED, "--max-connections=300"]


def test_an_empty_mariadb_tag_is_refused_not_rendered_as_an_invalid_image() -> None:
    message = render_error({"database": {"mariadb": {"image": {"tag": ""}}}})
    assert "/database/mariadb/image/tag" in message


def test_artifacthub_lists_the_images_the_chart_runs() -> None:
    meta = YAML(typ="safe", pure=True).load((CHART_DIR / "Chart.yaml").read_text())
    images = YAML(typ="safe", pure=True).load(meta["annotations"]["artifacthub.io/images"])
    listed = {i["name"]: i["image"] for i in images}
    assert listed["mariadb"] == container(render(), f"{FULLNAME}-mariadb", "mariadb")["image"]
    assert listed["opennebula"] == container(render())["image"]
