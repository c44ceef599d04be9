"""Settings: every variable, its default, every refusal, ``_FILE`` secrets and secrecy.

Each refusal is checked for the variable it names, a non-empty rule and fix, exit code 2,
and (for secrets) that the value never shows up in the message. Secrets use canary values
so "not in the message" cannot pass by accident.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onerun.catalogue import SERVICE_NAMES
from onerun.errors import EXIT_SETTINGS, Problem, SettingsError
from onerun.secret import Secret
from onerun.settings import PASSWORD_MAX_BYTES, Settings, load_settings

SECRETS = ("ONEADMIN_PASSWORD", "DB_PASSWORD", "ONE_KEY")
PASSWORDS = ("ONEADMIN_PASSWORD", "DB_PASSWORD")
CANARY = "CANARY7f3b"  # a marker that appears in no rule or fix text
GOOD_KEY = "0123456789abcdef0123456789abcdef"  # 32 characters
MYSQL = {"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": "pw"}


def refused(environ: dict[str, str], root: str | Path | None = None) -> SettingsError:
    """The SettingsError ``environ`` raises, after checking its shape and exit code."""
    with pytest.raises(SettingsError) as info:
        load_settings(environ, root=root)
    error = info.value
    assert error.exit_code == EXIT_SETTINGS == 2
    assert error.problems
    for problem in error.problems:
        assert isinstance(problem, Problem)
        assert problem.variable and problem.rule and problem.fix
        assert problem.variable in str(error)
        assert problem.rule in str(error) and problem.fix in str(error)
    return error


def only_problem(environ: dict[str, str], variable: str) -> Problem:
    """The single problem ``environ`` causes, which must name ``variable``."""
    error = refused(environ)
    assert [p.variable for p in error.problems] == [variable], error.problems
    return error.problems[0]


def variables(error: SettingsError) -> list[str]:
    return [problem.variable for problem in error.problems]


# --- defaults -------------------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.oneadmin_password is None
    assert s.db_password is None
    assert s.one_key is None
    assert s.db_backend == "sqlite"
    assert s.db_host is None
    assert s.db_port == 3306
    assert s.db_user == "oneadmin"
    assert s.db_name == "opennebula"
    assert s.hostname is None
    assert s.monitor_address is None
    assert s.listen_address == "0.0.0.0"
    assert s.config_file is None
    assert s.overrides == {}
    assert s.db_wait_timeout == 300.0
    assert s.log_format == "text"
    assert s.root is None
    assert s.services is None
    assert s.accept_empty_db is False
    assert s.ssh_dir is None
    assert s.maintenance is False
    assert s.backup_keep == 5
    assert all(s.service_enabled(name) for name in SERVICE_NAMES)


def test_empty_values_mean_the_default() -> None:
    names = ("DB_BACKEND", "DB_PORT", "DB_USER", "DB_NAME", "ONERUN_LISTEN_ADDRESS",
             "ONERUN_DB_WAIT_TIMEOUT", "ONERUN_LOG_FORMAT", "ONERUN_SERVICES",
             "ONERUN_BACKUP_KEEP", "ONERUN_CONFIG", "ONERUN_SSH_DIR", "ONERUN_ROOT", *SECRETS)
    assert load_settings(dict.fromkeys(names, "")) == Settings()


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "HOME": "/root", "DB_THING": "x"}) == Settings()


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(AttributeError):
        s.db_port = 1  # type: ignore[misc]


# --- secrets: direct values and *_FILE ------------------------------------------------


@pytest.mark.parametrize("name", SECRETS)
def test_secret_from_the_variable(name: str) -> None:
    s = load_settings({name: GOOD_KEY})
    value = getattr(s, name.lower())
    assert isinstance(value, Secret)
    assert value.reveal() == GOOD_KEY


@pytest.mark.parametrize("name", SECRETS)
def test_secret_file_loses_one_trailing_newline(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(GOOD_KEY + "\n")
    s = load_settings({f"{name}_FILE": str(path)})
    assert getattr(s, name.lower()).reveal() == GOOD_KEY


@pytest.mark.parametrize("name", SECRETS)
def test_secret_file_without_newline_is_taken_whole(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(GOOD_KEY)
    assert getattr(load_settings({f"{name}_FILE": str(path)}), name.lower()).reveal() == GOOD_KEY


@pytest.mark.parametrize("name", SECRETS)
@pytest.mark.parametrize("ending", ["\n\n", "\r\n", " \n"])
def test_secret_file_loses_exactly_one_newline(name: str, ending: str, tmp_path: Path) -> None:
    """Only one "\\n" goes: what is left ("\\n", "\\r", " ") is whitespace, which is refused."""
    path = tmp_path / "secret"
    path.write_text(GOOD_KEY + ending, newline="")
    problem = only_problem({f"{name}_FILE": str(path)}, name)
    assert "whitespace" in problem.rule


@pytest.mark.parametrize("name", SECRETS)
def test_empty_variable_with_file_uses_the_file(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(GOOD_KEY + "\n")
    s = load_settings({name: "", f"{name}_FILE": str(path)})
    assert getattr(s, name.lower()).reveal() == GOOD_KEY


@pytest.mark.parametrize("name", SECRETS)
def test_empty_file_variable_with_value_uses_the_value(name: str) -> None:
    s = load_settings({name: GOOD_KEY, f"{name}_FILE": ""})
    assert getattr(s, name.lower()).reveal() == GOOD_KEY


@pytest.mark.parametrize("name", SECRETS)
def test_both_variable_and_file_is_an_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(GOOD_KEY + CANARY)
    error = refused({name: GOOD_KEY + CANARY, f"{name}_FILE": str(path)})
    assert variables(error) == [name]
    assert f"{name}_FILE" in error.problems[0].rule
    assert CANARY not in str(error)


@pytest.mark.parametrize("name", SECRETS)
def test_missing_secret_file_names_the_file_variable(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    problem = only_problem({f"{name}_FILE": str(missing)}, f"{name}_FILE")
    assert str(missing) in problem.rule


@pytest.mark.parametrize("name", SECRETS)
def test_directory_as_secret_file_is_an_error(name: str, tmp_path: Path) -> None:
    only_problem({f"{name}_FILE": str(tmp_path)}, f"{name}_FILE")


@pytest.mark.parametrize("name", SECRETS)
def test_non_utf8_secret_file_is_an_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\xff\xfe" + GOOD_KEY.encode())
    problem = only_problem({f"{name}_FILE": str(path)}, f"{name}_FILE")
    assert "UTF-8" in problem.rule


@pytest.mark.parametrize("name", SECRETS)
def test_empty_secret_file_is_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("\n")
    only_problem({f"{name}_FILE": str(path)}, name)


def load_in_a_child(environ: dict[str, str], memory: int = 512 << 20) -> tuple[int, str]:
    """load_settings(environ) in a child process, bounded in time and address space: a
    secret file that hangs or never ends must fail this test, never the machine."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    code = ("import sys\nfrom onerun.errors import SettingsError\n"
            "from onerun.settings import load_settings\n"
            "try:\n    load_settings(dict(__import__('os').environ))\n"
            "except SettingsError as exc:\n    print(exc)\n    sys.exit(exc.exit_code)\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environ}
    try:
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, timeout=10, check=False, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading the settings hung: {environ}")
    return result.returncode, result.stdout + result.stderr


def kubernetes_projected_volume(base: Path, name: str, target: str | None = None) -> Path:
    """A Secret volume as the kubelet lays it out: name -> ..data/name, ..data -> ..<stamp>/."""
    stamp = base / "..2024_05_01_12_00_00.123456789"
    stamp.mkdir(parents=True)
    if target is None:
        (stamp / name).write_text(GOOD_KEY + "\n")
    else:
        (stamp / name).symlink_to(target)
    (base / "..data").symlink_to(stamp.name)
    (base / name).symlink_to(f"..data/{name}")
    return base / name


@pytest.mark.parametrize("name", SECRETS)
def test_secret_file_through_kubernetes_symlinks_is_read(name: str, tmp_path: Path) -> None:
    path = kubernetes_projected_volume(tmp_path / "secret-volume", "value")
    assert getattr(load_settings({f"{name}_FILE": str(path)}), name.lower()).reveal() == GOOD_KEY


@pytest.mark.parametrize("name", SECRETS)
@pytest.mark.parametrize("through_links", [False, True])
def test_fifo_as_secret_file_is_refused_without_hanging(name: str, through_links: bool,
                                                         tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = kubernetes_projected_volume(tmp_path / "v", "value", str(fifo)) if through_links \
        else fifo
    code, output = load_in_a_child({f"{name}_FILE": str(path)})
    assert code == 2, output
    assert f"{name}_FILE" in output and "not a regular file" in output


@pytest.mark.parametrize("name", SECRETS)
def test_endless_device_as_secret_file_is_refused(name: str) -> None:
    code, output = load_in_a_child({f"{name}_FILE": "/dev/zero"})
    assert code == 2, output
    assert f"{name}_FILE" in output and "not a regular file" in output


@pytest.mark.parametrize("name", SECRETS)
def test_huge_secret_file_is_refused_by_size(name: str, tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB of zeros that take no disk
    code, output = load_in_a_child({f"{name}_FILE": str(path)}, memory=256 << 20)
    assert code == 2, output
    assert f"{name}_FILE" in output and "larger than" in output


def test_secrets_never_appear_in_repr_or_str() -> None:
    key = CANARY * 4
    s = load_settings({"ONEADMIN_PASSWORD": CANARY + "a", "DB_PASSWORD": CANARY + "b",
                       "ONE_KEY": key, **{k: v for k, v in MYSQL.items() if k != "DB_PASSWORD"}})
    assert s.one_key is not None and s.one_key.reveal() == key
    for text in (repr(s), str(s), repr(s.db_password), str(s.oneadmin_password)):
        assert CANARY not in text
    assert "***" in repr(s.db_password)


@pytest.mark.parametrize("name", SECRETS)
def test_refused_secret_from_a_file_is_not_printed(name: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"{CANARY} with spaces and a \" quote\n")
    error = refused({f"{name}_FILE": str(path)})
    assert variables(error) and set(variables(error)) == {name}
    assert CANARY not in str(error)
    assert CANARY not in repr(error.problems)


# --- password rules -------------------------------------------------------------------

ALLOWED_CHARS = st.characters(
    blacklist_categories=("C", "Z"),  # control, format, private, unassigned; every space
    blacklist_characters="\"\\'",
)
ALLOWED_PASSWORDS = st.text(ALLOWED_CHARS, min_size=1, max_size=60).filter(
    lambda p: "]]>" not in p and len(p.encode()) <= PASSWORD_MAX_BYTES
)
FORBIDDEN_PIECES = st.sampled_from(
    ['"', "\\", "'", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85",
     "\xa0", "\u2028", "\u3000", "]]>"]
)


@settings(max_examples=200, deadline=None)
@given(password=ALLOWED_PASSWORDS, name=st.sampled_from(PASSWORDS))
def test_any_allowed_password_is_accepted_unchanged(password: str, name: str) -> None:
    s = load_settings({name: password})
    assert getattr(s, name.lower()).reveal() == password


@settings(max_examples=200, deadline=None)
@given(
    head=st.text(ALLOWED_CHARS, max_size=20),
    bad=FORBIDDEN_PIECES,
    tail=st.text(ALLOWED_CHARS, max_size=20),
    name=st.sampled_from(PASSWORDS),
)
def test_any_forbidden_password_is_refused_without_printing_it(
    head: str, bad: str, tail: str, name: str
) -> None:
    password = CANARY + head + bad + tail
    with pytest.raises(SettingsError) as info:
        load_settings({name: password})
    error = info.value
    assert error.exit_code == 2
    assert {p.variable for p in error.problems} == {name}
    assert password not in str(error)
    assert CANARY not in str(error)


@pytest.mark.parametrize("name", PASSWORDS)
def test_password_length_is_counted_in_bytes(name: str) -> None:
    assert load_settings({name: "a" * 256}) is not None
    assert load_settings({name: "é" * 128}) is not None  # 256 bytes
    assert "256 bytes" in only_problem({name: "a" * 257}, name).rule
    assert "256 bytes" in only_problem({name: "é" * 129}, name).rule


@pytest.mark.parametrize("name", PASSWORDS)
@pytest.mark.parametrize(
    ("bad", "rule_word"),
    [('"', "contain"), ("\\", "contain"), ("'", "contain"), (" ", "whitespace"),
     ("\t", "whitespace"), ("\x01", "control"), ("]]>", "]]>")],
)
def test_each_password_rule_is_named(name: str, bad: str, rule_word: str) -> None:
    problem = only_problem({name: f"{CANARY}{bad}x"}, name)
    assert rule_word in problem.rule
    assert CANARY not in str(problem)


@pytest.mark.parametrize("name", PASSWORDS)
def test_password_with_shell_and_grammar_punctuation_is_accepted(name: str) -> None:
    password = "p,a#s=s[1]:x$`;&|<>(){}!*?~]]"
    assert getattr(load_settings({name: password}), name.lower()).reveal() == password


def test_undecodable_environment_bytes_are_refused_not_crashing() -> None:
    """os.environ turns invalid UTF-8 into lone surrogates; they must be refused cleanly."""
    only_problem({"DB_PASSWORD": "ab\udcffcd"}, "DB_PASSWORD")


# --- ONE_KEY --------------------------------------------------------------------------


def test_one_key_of_32_characters_is_accepted() -> None:
    assert load_settings({"ONE_KEY": GOOD_KEY}).one_key == Secret(GOOD_KEY)


def test_one_key_as_generated_by_oned_is_accepted() -> None:
    key = "f" * 64  # sha256 hex, as oned writes it
    assert load_settings({"ONE_KEY": key}).one_key == Secret(key)


def test_one_key_shorter_than_32_is_refused() -> None:
    problem = only_problem({"ONE_KEY": CANARY + "x" * (31 - len(CANARY))}, "ONE_KEY")
    assert "32" in problem.rule
    assert CANARY not in str(problem)


@pytest.mark.parametrize("space", [" ", "\t", "\n"])
def test_one_key_with_whitespace_is_refused(space: str) -> None:
    problem = only_problem({"ONE_KEY": GOOD_KEY + space + CANARY}, "ONE_KEY")
    assert "whitespace" in problem.rule
    assert CANARY not in str(problem)


# --- database -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["sqlite", "SQLite", "SQLITE"])
def test_sqlite_backend(value: str) -> None:
    assert load_settings({"DB_BACKEND": value}).db_backend == "sqlite"


@pytest.mark.parametrize("value", ["mysql", "MySQL", "mariadb", "MariaDB", "MARIADB"])
def test_mysql_backend_and_mariadb_alias(value: str) -> None:
    s = load_settings({**MYSQL, "DB_BACKEND": value})
    assert s.db_backend == "mysql"
    assert s.db_host == "db"
    assert s.db_password == Secret("pw")


@pytest.mark.parametrize("value", ["postgres", "sqlite3", "my sql", "oracle"])
def test_unknown_backend_is_refused(value: str) -> None:
    problem = only_problem({"DB_BACKEND": value}, "DB_BACKEND")
    assert "mysql" in problem.fix and "sqlite" in problem.fix


def test_mysql_requires_host() -> None:
    error = refused({"DB_BACKEND": "mysql", "DB_PASSWORD": "pw"})
    assert variables(error) == ["DB_HOST"]
    assert "mysql" in error.problems[0].rule


def test_mysql_requires_password() -> None:
    error = refused({"DB_BACKEND": "mysql", "DB_HOST": "db"})
    assert variables(error) == ["DB_PASSWORD"]


def test_mysql_requires_both_at_once() -> None:
    assert set(variables(refused({"DB_BACKEND": "mariadb"}))) == {"DB_HOST", "DB_PASSWORD"}


def test_mysql_password_from_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    s = load_settings({"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD_FILE": str(path)})
    assert s.db_password == Secret("s3cret")


def test_mysql_with_unreadable_password_file_reports_only_the_file(tmp_path: Path) -> None:
    error = refused({"DB_BACKEND": "mysql", "DB_HOST": "db",
                     "DB_PASSWORD_FILE": str(tmp_path / "absent")})
    assert variables(error) == ["DB_PASSWORD_FILE"]


def test_sqlite_needs_no_host_or_password() -> None:
    s = load_settings({"DB_BACKEND": "sqlite"})
    assert s.db_host is None and s.db_password is None


@pytest.mark.parametrize("host", ["db", "mariadb.one.svc.cluster.local", "10.0.0.7", "fd00::1",
                                  "db-0.db_headless"])
def test_valid_db_host(host: str) -> None:
    assert load_settings({**MYSQL, "DB_HOST": host}).db_host == host


@pytest.mark.parametrize("host", ["db host", "db;rm", "db\n", "$(id)", "db/x", "d'b", "[db]",
                                  "[::1", "::1]", "[10.0.0.7]", "db:", ":3306", "a:b:c", "[]"])
def test_invalid_db_host_is_refused(host: str) -> None:
    only_problem({**MYSQL, "DB_HOST": host}, "DB_HOST")


@pytest.mark.parametrize(("raw", "host"), [("[::1]", "::1"), ("::1", "::1"),
                                           ("[fd00:0:0::7]", "fd00::7"), ("FD00::7", "fd00::7"),
                                           ("[fe80::1%eth0]", "fe80::1%eth0")])
def test_ipv6_db_host_has_one_form_without_brackets(raw: str, host: str) -> None:
    # oned hands SERVER to mysql_real_connect, which resolves it with getaddrinfo: a bare
    # address works there, "[::1]" does not (src/sql/MySqlDB.cc@7.4).
    assert load_settings({**MYSQL, "DB_HOST": raw}).db_host == host


@pytest.mark.parametrize("host", ["db:3306", "10.0.0.7:3306", "[::1]:3306",
                                  "mariadb.one.svc:3307"])
def test_a_port_in_db_host_is_refused_naming_db_port(host: str) -> None:
    problem = only_problem({**MYSQL, "DB_HOST": host}, "DB_HOST")
    assert "port" in problem.rule
    assert "DB_PORT" in problem.fix


@pytest.mark.parametrize(("raw", "port"), [("1", 1), ("3306", 3306), ("65535", 65535),
                                           ("03307", 3307)])
def test_db_port_in_range(raw: str, port: int) -> None:
    assert load_settings({"DB_PORT": raw}).db_port == port


@pytest.mark.parametrize(
    # "\u00b2" (superscript two) and fullwidth digits pass str.isdigit(); int() fails or differs
    "raw",
    ["0", "65536", "abc", "-1", "3306.0", "1e3", "\u00b2", "\uff13\uff13\uff10\uff16", " 3306"],
)
def test_db_port_out_of_range_or_not_a_number(raw: str) -> None:
    problem = only_problem({"DB_PORT": raw}, "DB_PORT")
    assert "1 to 65535" in problem.rule


@pytest.mark.parametrize("name", ["opennebula", "one_db", "a1", "1a", "ONE", "_", "x" * 64])
def test_valid_db_name(name: str) -> None:
    assert load_settings({"DB_NAME": name}).db_name == name


@pytest.mark.parametrize(
    "name", ["123", "0", "x" * 65, "one-db", "one db", "one.db", "one`db", "a$b", "one\n", "é"]
)
def test_db_name_must_be_valid_unquoted(name: str) -> None:
    problem = only_problem({"DB_NAME": name}, "DB_NAME")
    assert "unquoted" in problem.rule


@pytest.mark.parametrize("user", ["oneadmin", "one_admin", "one-admin", "one.admin", "x" * 80])
def test_valid_db_user(user: str) -> None:
    assert load_settings({"DB_USER": user}).db_user == user


@pytest.mark.parametrize("user", ["one admin", "a;b", "a'b", 'a"b', "a$b", "x" * 81, "a\n"])
def test_invalid_db_user_is_refused(user: str) -> None:
    only_problem({"DB_USER": user}, "DB_USER")


# --- identity: OPENNEBULA_HOSTNAME, OPENNEBULA_MONITOR_ADDRESS ------------------------


@pytest.mark.parametrize(("name", "field"), [("OPENNEBULA_HOSTNAME", "hostname"),
                                             ("OPENNEBULA_MONITOR_ADDRESS", "monitor_address")])
@pytest.mark.parametrize("value", ["", "auto", "AUTO", "Auto"])
def test_empty_or_auto_keeps_the_upstream_default(name: str, field: str, value: str) -> None:
    assert getattr(load_settings({name: value}), field) is None


@pytest.mark.parametrize(("name", "field"), [("OPENNEBULA_HOSTNAME", "hostname"),
                                             ("OPENNEBULA_MONITOR_ADDRESS", "monitor_address")])
@pytest.mark.parametrize("value", ["one.example.com", "opennebula-0.one", "192.168.1.5", "fd00::2"])
def test_explicit_address_is_kept(name: str, field: str, value: str) -> None:
    assert getattr(load_settings({name: value}), field) == value


@pytest.mark.parametrize("name", ["OPENNEBULA_HOSTNAME", "OPENNEBULA_MONITOR_ADDRESS"])
@pytest.mark.parametrize("value", ["a b", 'a"b', "a\nHOSTNAME=x", "a,b", "a=b"])
def test_bad_address_is_refused(name: str, value: str) -> None:
    only_problem({name: value}, name)


# --- ONERUN_CONFIG --------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write ONERUN_CONFIG text and return the environment naming it."""

    def write(text: str, **extra: str) -> dict[str, str]:
        path = tmp_path / "onerun.yaml"
        path.write_text(text)
        return {"ONERUN_CONFIG": str(path), **extra}

    return write


def nested(depth: int, style: str) -> str:
    """ONERUN_CONFIG text with one oneflow value nested ``depth`` levels deep."""
    if style == "flow":
        return "oneflow:\n  k: " + "[" * depth + "1" + "]" * depth + "\n"
    lines = ["oneflow:\n"] + [" " * (i + 1) + f"k{i}:\n" for i in range(depth)]
    return "".join(lines) + " " * (depth + 1) + "v\n"


@pytest.mark.parametrize("style", ["flow", "block"])
@pytest.mark.parametrize("depth", [40, 300, 5000])
def test_deeply_nested_config_is_a_settings_error(config, depth: int,  # type: ignore[no-untyped-def]
                                                   style: str) -> None:
    problem = only_problem(config(nested(depth, style)), "ONERUN_CONFIG")
    assert "deep" in problem.rule


def test_config_nested_a_few_levels_is_fine(config) -> None:  # type: ignore[no-untyped-def]
    assert load_settings(config(nested(8, "block"))).overrides["oneflow"]["k0"]["k1"]


@pytest.mark.parametrize("text", [
    "oneflow:\n  a: &a [*a]\n",  # an alias inside its own anchor: endless
    "oneflow:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"  {n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
              for p, n in zip("abcdefg", "bcdefgh", strict=True)),  # 10**8 copies when expanded
])
def test_aliases_that_cannot_be_expanded_are_a_settings_error(  # type: ignore[no-untyped-def]
        config, text: str) -> None:
    only_problem(config(text), "ONERUN_CONFIG")


def test_deep_config_exits_2_through_the_cli(config) -> None:  # type: ignore[no-untyped-def]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **config(nested(5000, "flow"))}
    result = subprocess.run([sys.executable, "-m", "onerun", "render", "--root", "/nonexistent"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "ONERUN_CONFIG" in result.stderr
    assert "RecursionError" not in result.stderr and "unexpected" not in result.stderr


def test_config_with_every_section(config) -> None:  # type: ignore[no-untyped-def]
    env = config(
        "oned:\n"
        "  DEFAULT_UMASK: 117\n"
        "  VNC_PORTS: {START: 6000}\n"
        "  VM_MAD: [{NAME: kvm, EXECUTABLE: one_vmm_exec}, {NAME: lxc}]\n"
        "monitord:\n  NETWORK: {PORT: 4125}\n"
        "oneflow:\n  :port: 2475\n"
        "onegate:\n  :server:\n    :bind: 0.0.0.0\n"
        "fireedge:\n  port: 2616\n"
        "oneform:\n  :log: {\":level\": 2}\n"
        "onehem:\n  :x: [1, 2]\n"
        "oneks:\n  :y: true\n"
    )
    s = load_settings(env)
    assert s.config_file == Path(env["ONERUN_CONFIG"])
    assert s.overrides == {
        "oned": {
            "DEFAULT_UMASK": 117,
            "VNC_PORTS": {"START": 6000},
            "VM_MAD": [{"NAME": "kvm", "EXECUTABLE": "one_vmm_exec"}, {"NAME": "lxc"}],
        },
        "monitord": {"NETWORK": {"PORT": 4125}},
        "oneflow": {":port": 2475},
        "onegate": {":server": {":bind": "0.0.0.0"}},
        "fireedge": {"port": 2616},
        "oneform": {":log": {":level": 2}},
        "onehem": {":x": [1, 2]},
        "oneks": {":y": True},
    }


@pytest.mark.parametrize("text", ["", "# only a comment\n", "oned:\n", "---\n"])
def test_empty_config_means_no_overrides(config, text: str) -> None:  # type: ignore[no-untyped-def]
    assert load_settings(config(text)).overrides == {}


def test_unknown_section_is_refused(config) -> None:  # type: ignore[no-untyped-def]
    problem = only_problem(config("oned: {A: 1}\nsunstone: {B: 2}\n"), "ONERUN_CONFIG")
    assert "sunstone" in problem.rule
    assert "oned" in problem.fix


@pytest.mark.parametrize("text", ["- oned\n", "just text\n", "42\n"])
def test_config_that_is_not_a_mapping_is_refused(config, text: str) -> None:  # type: ignore[no-untyped-def]
    only_problem(config(text), "ONERUN_CONFIG")


def test_section_that_is_not_a_mapping_is_refused(config) -> None:  # type: ignore[no-untyped-def]
    error = refused(config("oned: [1, 2]\n"))
    assert variables(error) == ["ONERUN_CONFIG: oned"]


@pytest.mark.parametrize(
    ("text", "line"),
    [("oned:\n  A: 1\n  B: x: y\n", 3), ("oned:\n  A: 1\n  A: 2\n", 3),
     ("oned: {A: 1\n", 2)],
)
def test_invalid_yaml_names_the_line(config, text: str, line: int) -> None:  # type: ignore[no-untyped-def]
    problem = only_problem(config(text), "ONERUN_CONFIG")
    assert "YAML" in problem.rule
    assert f"line {line}" in problem.rule


def test_invalid_yaml_does_not_echo_values(config) -> None:  # type: ignore[no-untyped-def]
    """A duplicate-key error quotes values in ruamel's text; the message must not."""
    error = refused(config(f"oneflow:\n  :pw: {CANARY}1\n  :pw: {CANARY}2\n"))
    assert CANARY not in str(error)


def test_unreadable_config_is_refused(tmp_path: Path) -> None:
    problem = only_problem({"ONERUN_CONFIG": str(tmp_path / "absent.yaml")}, "ONERUN_CONFIG")
    assert "absent.yaml" in problem.rule
    only_problem({"ONERUN_CONFIG": str(tmp_path)}, "ONERUN_CONFIG")


@pytest.mark.parametrize("text", ["oned: {DB: {BACKEND: mysql}}\n", "oned:\n  db: {PASSWD: x}\n",
                                  "oned: {Db: sqlite}\n"])
def test_db_vector_override_is_refused(config, text: str) -> None:  # type: ignore[no-untyped-def]
    problem = only_problem(config(text), "ONERUN_CONFIG: oned.DB")
    assert "DB_" in problem.fix


def test_db_in_monitord_is_not_onerun_s_vector(config) -> None:  # type: ignore[no-untyped-def]
    assert load_settings(config("monitord: {DB: {CONNECTIONS: 10}}\n")).overrides == {
        "monitord": {"DB": {"CONNECTIONS": 10}}
    }


@pytest.mark.parametrize("key", ["HOSTNAME", "hostname"])
def test_hostname_in_both_places_is_refused(config, key: str) -> None:  # type: ignore[no-untyped-def]
    env = config(f"oned: {{{key}: one.example.com}}\n", OPENNEBULA_HOSTNAME="one.example.com")
    only_problem(env, "OPENNEBULA_HOSTNAME")


def test_hostname_in_one_place_is_fine(config) -> None:  # type: ignore[no-untyped-def]
    s = load_settings(config("oned: {HOSTNAME: one.example.com}\n", OPENNEBULA_HOSTNAME="auto"))
    assert s.hostname is None
    assert s.overrides["oned"]["HOSTNAME"] == "one.example.com"


@pytest.mark.parametrize("text", ["monitord: {NETWORK: {MONITOR_ADDRESS: 10.0.0.1}}\n",
                                  "monitord: {network: {monitor_address: 10.0.0.1}}\n"])
def test_monitor_address_in_both_places_is_refused(config, text: str) -> None:  # type: ignore[no-untyped-def]
    only_problem(config(text, OPENNEBULA_MONITOR_ADDRESS="10.0.0.2"), "OPENNEBULA_MONITOR_ADDRESS")


def test_monitor_address_in_one_place_is_fine(config) -> None:  # type: ignore[no-untyped-def]
    env = config("monitord: {NETWORK: {PORT: 4124}}\n", OPENNEBULA_MONITOR_ADDRESS="10.0.0.2")
    assert load_settings(env).monitor_address == "10.0.0.2"


@pytest.mark.parametrize("key", ["BAD-NAME", "'A B'", "1", "'X.Y'"])
def test_bad_attribute_name_is_refused(config, key: str) -> None:  # type: ignore[no-untyped-def]
    error = refused(config(f"oned: {{{key}: 1}}\n", OPENNEBULA_HOSTNAME="h"))
    assert variables(error) == ["ONERUN_CONFIG: oned"]


@pytest.mark.parametrize(
    "value",
    ["{A: {B: 1}}", "[[1, 2]]", "null", "[{A: [1]}]", "{BAD-KEY: 1}", "2020-01-01"],
)
def test_bad_value_shape_is_refused(config, value: str) -> None:  # type: ignore[no-untyped-def]
    error = refused(config(f"monitord:\n  X: {value}\n"))
    assert variables(error) == ["ONERUN_CONFIG: monitord.X"]


@pytest.mark.parametrize("value", ["1", "text", "true", "1.5", "{A: 1, B: x}", "[a, b]",
                                   "[{A: 1}, {A: 2}]"])
def test_good_value_shapes(config, value: str) -> None:  # type: ignore[no-untyped-def]
    assert "X" in load_settings(config(f"oned:\n  X: {value}\n")).overrides["oned"]


# --- ONERUN_* ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0.0.0.0", "10.1.2.3", "127.0.0.1", "::", "fd00::5", "::1"])
def test_listen_address(value: str) -> None:
    assert load_settings({"ONERUN_LISTEN_ADDRESS": value}).listen_address == value


@pytest.mark.parametrize("value", ["localhost", "0.0.0.0:2633", "300.1.1.1", "[::]", "any"])
def test_bad_listen_address_is_refused(value: str) -> None:
    only_problem({"ONERUN_LISTEN_ADDRESS": value}, "ONERUN_LISTEN_ADDRESS")


@pytest.mark.parametrize(("raw", "seconds"), [("0", 0.0), ("12.5", 12.5), ("600", 600.0),
                                              ("1e3", 1000.0)])
def test_db_wait_timeout(raw: str, seconds: float) -> None:
    assert load_settings({"ONERUN_DB_WAIT_TIMEOUT": raw}).db_wait_timeout == seconds


@pytest.mark.parametrize("raw", ["-1", "nan", "NaN", "inf", "x", "10s", "86401"])
def test_bad_db_wait_timeout_is_refused(raw: str) -> None:
    only_problem({"ONERUN_DB_WAIT_TIMEOUT": raw}, "ONERUN_DB_WAIT_TIMEOUT")


def test_refused_timeout_never_leaks_nan() -> None:
    with pytest.raises(SettingsError):
        load_settings({"ONERUN_DB_WAIT_TIMEOUT": "nan"})
    assert not math.isnan(load_settings({}).db_wait_timeout)


@pytest.mark.parametrize(("raw", "fmt"), [("text", "text"), ("json", "json"), ("JSON", "json")])
def test_log_format(raw: str, fmt: str) -> None:
    assert load_settings({"ONERUN_LOG_FORMAT": raw}).log_format == fmt


@pytest.mark.parametrize("raw", ["xml", "logfmt", "jsonl"])
def test_bad_log_format_is_refused(raw: str) -> None:
    only_problem({"ONERUN_LOG_FORMAT": raw}, "ONERUN_LOG_FORMAT")


def test_services_subset() -> None:
    s = load_settings({"ONERUN_SERVICES": " oned , fireedge,guacd,,"})
    assert s.services == frozenset({"oned", "fireedge", "guacd"})
    assert s.service_enabled("fireedge")
    assert not s.service_enabled("oneflow")


def test_every_service_name_is_accepted() -> None:
    s = load_settings({"ONERUN_SERVICES": ",".join(SERVICE_NAMES)})
    assert s.services == frozenset(SERVICE_NAMES)


@pytest.mark.parametrize("raw", ["", " ", ",,"])
def test_empty_services_means_all(raw: str) -> None:
    assert load_settings({"ONERUN_SERVICES": raw}).services is None


def test_unknown_service_is_refused() -> None:
    problem = only_problem({"ONERUN_SERVICES": "oned,sunstone,scheduler"}, "ONERUN_SERVICES")
    assert "sunstone" in problem.rule and "scheduler" in problem.rule
    assert "fireedge" in problem.fix


def test_services_without_oned_are_refused() -> None:
    problem = only_problem({"ONERUN_SERVICES": "fireedge,oneflow"}, "ONERUN_SERVICES")
    assert "oned" in problem.rule


@pytest.mark.parametrize(("name", "field"), [("ONERUN_ACCEPT_EMPTY_DB", "accept_empty_db"),
                                             ("ONERUN_MAINTENANCE", "maintenance")])
@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("TRUE", True),
                                            ("yes", True), ("on", True), ("0", False),
                                            ("", False), ("false", False), ("no", False),
                                            ("off", False)])
def test_booleans(name: str, field: str, raw: str, value: bool) -> None:
    assert getattr(load_settings({name: raw}), field) is value


@pytest.mark.parametrize("name", ["ONERUN_ACCEPT_EMPTY_DB", "ONERUN_MAINTENANCE"])
@pytest.mark.parametrize("raw", ["maybe", "2", "y es"])
def test_bad_boolean_is_refused(name: str, raw: str) -> None:
    only_problem({name: raw}, name)


def test_ssh_dir_must_be_a_directory(tmp_path: Path) -> None:
    assert load_settings({"ONERUN_SSH_DIR": str(tmp_path)}).ssh_dir == tmp_path
    afile = tmp_path / "id_rsa"
    afile.write_text("key")
    only_problem({"ONERUN_SSH_DIR": str(afile)}, "ONERUN_SSH_DIR")
    only_problem({"ONERUN_SSH_DIR": str(tmp_path / "absent")}, "ONERUN_SSH_DIR")


@pytest.mark.parametrize(("raw", "keep"), [("1", 1), ("7", 7), ("1000", 1000)])
def test_backup_keep(raw: str, keep: int) -> None:
    assert load_settings({"ONERUN_BACKUP_KEEP": raw}).backup_keep == keep


@pytest.mark.parametrize("raw", ["0", "1001", "-3", "x", "2.5"])
def test_bad_backup_keep_is_refused(raw: str) -> None:
    only_problem({"ONERUN_BACKUP_KEEP": raw}, "ONERUN_BACKUP_KEEP")


def test_manual_backups_are_kept_unless_a_count_is_set() -> None:
    assert load_settings({}).backup_keep_manual is None
    assert load_settings({"ONERUN_BACKUP_KEEP_MANUAL": ""}).backup_keep_manual is None
    assert load_settings({"ONERUN_BACKUP_KEEP_MANUAL": "3"}).backup_keep_manual == 3


@pytest.mark.parametrize("raw", ["0", "1001", "x", "2.5"])
def test_bad_manual_backup_keep_is_refused(raw: str) -> None:
    only_problem({"ONERUN_BACKUP_KEEP_MANUAL": raw}, "ONERUN_BACKUP_KEEP_MANUAL")


@pytest.mark.parametrize(("raw", "grace"), [(None, 20.0), ("0", 0.0), ("45.5", 45.5)])
def test_upgrade_stop_grace(raw: str | None, grace: float) -> None:
    env = {} if raw is None else {"ONERUN_UPGRADE_STOP_GRACE": raw}
    assert load_settings(env).upgrade_stop_grace == grace


@pytest.mark.parametrize("raw", ["-1", "3601", "nan", "20s"])
def test_bad_upgrade_stop_grace_is_refused(raw: str) -> None:
    only_problem({"ONERUN_UPGRADE_STOP_GRACE": raw}, "ONERUN_UPGRADE_STOP_GRACE")


# --- root -----------------------------------------------------------------------------


def test_root_from_environment(tmp_path: Path) -> None:
    assert load_settings({"ONERUN_ROOT": str(tmp_path)}).root == tmp_path.resolve()


def test_root_argument_wins_over_environment(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen"
    s = load_settings({"ONERUN_ROOT": str(tmp_path / "env")}, root=chosen)
    assert s.root == chosen.resolve()
    assert load_settings({"ONERUN_ROOT": str(tmp_path)}, root=str(chosen)).root == chosen.resolve()


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings({}, root="r").root == tmp_path.resolve() / "r"


# --- every problem at once ------------------------------------------------------------


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    env = {
        "ONEADMIN_PASSWORD": f'{CANARY}"x',
        "DB_PASSWORD": f"{CANARY} y",
        "ONE_KEY": CANARY,
        "DB_BACKEND": "mysql",
        "DB_PORT": "0",
        "DB_NAME": "123",
        "ONERUN_LISTEN_ADDRESS": "nowhere",
        "ONERUN_DB_WAIT_TIMEOUT": "soon",
        "ONERUN_LOG_FORMAT": "xml",
        "ONERUN_SERVICES": "fireedge",
        "ONERUN_MAINTENANCE": "maybe",
        "ONERUN_ACCEPT_EMPTY_DB": "perhaps",
        "ONERUN_SSH_DIR": str(tmp_path / "absent"),
        "ONERUN_BACKUP_KEEP": "0",
        "ONERUN_CONFIG": str(tmp_path / "absent.yaml"),
    }
    error = refused(env)
    expected = {name for name in env if name != "DB_BACKEND"} | {"DB_HOST"}
    assert set(variables(error)) == expected
    assert f"{len(error.problems)} problem(s)" in str(error)
    assert CANARY not in str(error)


def test_problem_text_names_variable_rule_and_fix() -> None:
    problem = Problem("DB_PORT", "is bad", "fix it")
    assert str(problem) == "DB_PORT: is bad (fix: fix it)"
