"""Secrets: generated once and kept, or taken from existingSecret; only ever mounted as files."""

from __future__ import annotations

from chartlib import (
    FULLNAME,
    container,
    env,
    render,
    render_error,
    secret_item_behind,
    secret_value,
)

SECRET_VARIABLES = ("ONEADMIN_PASSWORD", "DB_PASSWORD", "ONE_KEY")


def test_generated_secret_is_kept_and_matches_onerun_rules() -> None:
    rendered = render()
    secret = rendered.get("Secret", FULLNAME)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    password = secret_value(rendered, FULLNAME, "oneadmin-password")
    one_key = secret_value(rendered, FULLNAME, "one-key")
    assert len(password) >= 16 and password.isalnum()
    assert len(one_key) >= 32 and one_key.isalnum()  # onerun refuses a one_key under 32
    assert secret_value(rendered, FULLNAME, "one_auth") == f"oneadmin:{password}"
    mariadb = rendered.get("Secret", f"{FULLNAME}-mariadb")
    assert mariadb["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_without_lookup_every_render_generates_new_values() -> None:
    """What a GitOps tool that cannot `lookup` sees: hence NOTES points it to existingSecret."""
    first, second = render(), render()
    assert secret_value(first, FULLNAME, "one-key") != secret_value(second, FULLNAME, "one-key")
    assert "existingSecret" in first.notes and "lookup" in first.notes
    assert "base64 -d" in first.notes and "oneadmin-password" in first.notes


def test_explicit_values_are_used() -> None:
    key = "k" * 40
    rendered = render({"opennebula": {"oneadminPassword": "Adm1n-pw", "oneKey": key}})
    assert secret_value(rendered, FULLNAME, "oneadmin-password") == "Adm1n-pw"
    assert secret_value(rendered, FULLNAME, "one-key") == key
    assert secret_value(rendered, FULLNAME, "one_auth") == "oneadmin:Adm1n-pw"


def test_existing_secret_replaces_the_generated_one() -> None:
    rendered = render(
        {
            "opennebula": {
                "existingSecret": "creds",
                "existingSecretKeys": {"oneadminPassword": "pw", "oneKey": "key"},
            },
            "database": {"type": "sqlite"},
        }
    )
    assert FULLNAME not in rendered.names("Secret")
    variables = env(container(rendered))
    assert secret_item_behind(rendered, variables["ONEADMIN_PASSWORD_FILE"]) == ("creds", "pw")
    assert secret_item_behind(rendered, variables["ONE_KEY_FILE"]) == ("creds", "key")
    # Nothing was generated, so nothing for GitOps tools to regenerate.
    assert "WARNING" not in rendered.notes
    assert "get secret creds" in rendered.notes and "{.data.pw}" in rendered.notes


def test_secrets_reach_onerun_only_as_files() -> None:
    rendered = render(
        {
            "opennebula": {"oneadminPassword": "Adm1n-pw"},
            "database": {"type": "external", "external": {"host": "db", "password": "Db-pw-123"}},
        }
    )
    c = container(rendered)
    variables = env(c)
    for name in SECRET_VARIABLES:
        assert name not in variables
        assert secret_item_behind(rendered, variables[f"{name}_FILE"])
    assert "Adm1n-pw" not in str(c) and "Db-pw-123" not in str(c)
    pod = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]
    assert "Adm1n-pw" not in str(pod["metadata"])


def test_extra_env_cannot_smuggle_a_plain_secret() -> None:
    message = render_error({"extraEnv": [{"name": "DB_PASSWORD", "value": "x"}]})
    assert "extraEnv must not set DB_PASSWORD" in message and "DB_PASSWORD_FILE" in message


def test_ssh_key_secret_is_mounted_for_onerun() -> None:
    rendered = render({"opennebula": {"ssh": {"existingSecret": "one-ssh"}}})
    ssh_dir = env(container(rendered))["ONERUN_SSH_DIR"]
    spec = rendered.get("StatefulSet", FULLNAME)["spec"]["template"]["spec"]
    mount = next(m for m in container(rendered)["volumeMounts"] if m["mountPath"] == ssh_dir)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "one-ssh"
    assert "ONERUN_SSH_DIR" not in env(container(render()))  # default: generated on the volume


def test_schema_refuses_passwords_oned_would_refuse() -> None:
    assert "/opennebula/oneadminPassword" in render_error(
        {"opennebula": {"oneadminPassword": 'has"quote'}}
    )
    assert "/opennebula/oneKey" in render_error({"opennebula": {"oneKey": "short"}})


def test_helm_test_pod_uses_the_real_credentials_through_the_service() -> None:
    rendered = render()
    pod = rendered.get("Pod", f"{FULLNAME}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["command"][:3] == ["onerun", "probe", "readiness"]
    variables = env(c)
    assert variables["ONE_XMLRPC"] == f"http://{FULLNAME}.cloud.svc.cluster.local:2633/RPC2"
    service = rendered.get("Service", FULLNAME)
    assert {"name": "xmlrpc", "port": 2633} in [
        {"name": p["name"], "port": p["port"]} for p in service["spec"]["ports"]
    ]
    auth_dir, auth_file = variables["ONE_AUTH"].rsplit("/", 1)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == auth_dir)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == FULLNAME
    assert {"key": "one_auth", "path": auth_file} in volume["secret"]["items"]


def test_helm_test_pod_builds_one_auth_from_an_existing_secret() -> None:
    pod = render({"opennebula": {"existingSecret": "creds"}}).get("Pod", f"{FULLNAME}-test")
    init = pod["spec"]["initContainers"][0]
    script = init["command"][-1]
    assert "oneadmin:%s" in script and "umask 077" in script
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "creds"
    assert volumes["auth"]["emptyDir"]["medium"] == "Memory"
    assert env(pod["spec"]["containers"][0])["ONE_AUTH"] == "/etc/onerun/auth/one_auth"
