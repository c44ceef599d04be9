"""Rendering /etc/one from etc-dist: owned keys, overrides, untouched rest, the CLI end to end."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testlib import PROJECT, UPSTREAM_VERSIONS

from onerun.config import oneconf, render, yamlconf
from onerun.errors import SettingsError, UnsafeStateError
from onerun.layout import Layout
from onerun.plan import ApplyContext, Check, Plan, WriteFile
from onerun.secret import Secret
from onerun.settings import Settings, load_settings

PASSWORD = "p,a#s=s[1]:x"
OWNED = {"DB", "HOSTNAME", "LISTEN_ADDRESS", "GRPC_LISTEN_ADDRESS"}
MakeRoot = Callable[..., Path]
RENDERED = {"oned.conf", "monitord.conf", "oneflow-server.conf", "onegate-server.conf",
            "oneform-server.conf", "oneks-server.conf"}


# ------------------------------------------------------------------ independent reader
# Reads the DB vector the way src/parsers/template_parser.l (OpenNebula/one) lexes it, with
# plain regexes and none of onerun.config.oneconf: a quoted body is any char but '"' or the
# pair '\"', and only '\"' unescapes. Good enough for the files onerun writes (no value
# ends in a backslash).
_QUOTED = r'"(?:\\"|[^"])*"'
_DB_VECTOR = re.compile(r'^[ \t]*DB[ \t]*=[ \t]*\[((?:' + _QUOTED + r'|[^\]"])*)\]', re.M | re.I)
_ITEM = re.compile(r'([A-Za-z0-9_]+)\s*=\s*(' + _QUOTED + r'|[^,\s\]]+)')


def read_db_vector_independently(text: str) -> dict[str, str]:
    uncommented = "\n".join(
        "" if line.lstrip().startswith("#") else line for line in text.split("\n")
    )
    vectors = _DB_VECTOR.findall(uncommented)
    assert len(vectors) == 1, f"expected one DB vector, found {len(vectors)}"
    items: dict[str, str] = {}
    for key, raw in _ITEM.findall(vectors[0]):
        value = raw[1:-1] if raw.startswith('"') else raw
        items.setdefault(key.upper(), value.replace('\\"', '"'))
    return items


# ------------------------------------------------------------------ helpers
def render_into(root: Path, env: Mapping[str, str]) -> list[Any]:
    """Render with settings from ``env`` and apply the writes under ``root``."""
    settings_ = load_settings(dict(env), root=root)
    layout = Layout(root)
    actions = render.render_configs(settings_, layout)
    context = ApplyContext(layout, os.getuid(), os.getgid(), lambda _: None)
    Plan(actions=list(actions)).apply(context)
    return actions


def oned(root: Path) -> oneconf.Document:
    return oneconf.parse((root / "etc/one/oned.conf").read_text())


def pairs(document: oneconf.Document, skip: set[str]) -> list[tuple[str, Any]]:
    return [(a.name, a.value) for a in document.attributes() if a.name not in skip]


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "onerun.yaml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ real upstream files
@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_sqlite_default_and_untouched_rest(make_root: MakeRoot, version: str) -> None:
    root = make_root(version)
    dist = root / "usr/share/one/etc-dist"
    render_into(root, {})
    document = oned(root)
    assert document.get("DB") == {"BACKEND": "sqlite", "TIMEOUT": "2500"}
    assert read_db_vector_independently((root / "etc/one/oned.conf").read_text()) == {
        "BACKEND": "sqlite", "TIMEOUT": "2500"}
    assert document.get("LISTEN_ADDRESS") == "0.0.0.0"
    assert document.get("HOSTNAME") is None
    packaged = oneconf.parse((dist / "oned.conf").read_text())
    assert pairs(document, OWNED) == pairs(packaged, OWNED)
    # the whole tree is there; files onerun does not edit are byte-identical, same mode
    for source in dist.rglob("*"):
        target = root / "etc/one" / source.relative_to(dist)
        assert target.exists(), target
        if source.is_file() and source.name not in RENDERED:
            assert target.read_bytes() == source.read_bytes(), source.name
            assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(source.stat().st_mode)
    # nothing to change in monitord.conf without settings for it: same bytes
    assert (root / "etc/one/monitord.conf").read_bytes() == (dist / "monitord.conf").read_bytes()
    assert (root / "etc/one/schedulers/rank.conf").is_file()
    assert stat.S_IMODE((root / "etc/one/oned.conf").stat().st_mode) == 0o600


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_ipv6_db_host_reaches_every_client_in_one_form(make_root: MakeRoot, version: str,
                                                       tmp_path: Path) -> None:
    """DB_HOST="[::1]": oned's SERVER, onedb's -S and mariadb-dump's option file all get the
    bare address that mysql_real_connect and getaddrinfo accept."""
    from onerun.database.mysql_client import client_defaults_file
    from onerun.upgrade import onedb_command

    root = make_root(version)
    env = {"DB_BACKEND": "mysql", "DB_HOST": "[::1]", "DB_PASSWORD": PASSWORD}
    render_into(root, env)
    rendered = read_db_vector_independently((root / "etc/one/oned.conf").read_text())
    assert rendered["SERVER"] == "::1"
    settings_ = load_settings(env, root=root)
    argv = onedb_command(settings_, Layout(root))
    assert argv[argv.index("-S") + 1] == "::1"
    with client_defaults_file(settings_) as option_file:
        assert "host=::1\n" in option_file.read_text()


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_mysql_vector_carries_the_password_exactly(make_root: MakeRoot, version: str) -> None:
    root = make_root(version)
    actions = render_into(root, {"DB_BACKEND": "mysql", "DB_HOST": "db",
                                 "DB_PASSWORD": PASSWORD, "DB_NAME": "one_db"})
    text = (root / "etc/one/oned.conf").read_text()
    expected = {"BACKEND": "mysql", "SERVER": "db", "PORT": "3306", "USER": "oneadmin",
                "PASSWD": PASSWORD, "DB_NAME": "one_db", "CONNECTIONS": "25",
                "COMPARE_BINARY": "no"}
    assert oned(root).get("DB") == expected
    assert read_db_vector_independently(text) == expected
    assert len(oned(root).get_all("DB")) == 1
    written = [a for a in actions if isinstance(a, WriteFile) and a.path.name == "oned.conf"]
    assert written[0].sensitive and written[0].mode == 0o600
    assert PASSWORD not in repr(written[0].describe())


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_hostname_listen_and_monitor_address(make_root: MakeRoot, version: str) -> None:
    root = make_root(version)
    render_into(root, {"OPENNEBULA_HOSTNAME": "one.example", "ONERUN_LISTEN_ADDRESS": "::",
                       "OPENNEBULA_MONITOR_ADDRESS": "10.0.0.5"})
    document = oned(root)
    assert document.get_all("HOSTNAME") == ["one.example"]
    assert document.get("LISTEN_ADDRESS") == "::"
    grpc = oneconf.parse((root / "usr/share/one/etc-dist/oned.conf").read_text())
    if "GRPC_LISTEN_ADDRESS" in grpc:  # 7.2+ only; never added to 7.0
        assert document.get("GRPC_LISTEN_ADDRESS") == "::"
    else:
        assert "GRPC_LISTEN_ADDRESS" not in document
    monitord = oneconf.parse((root / "etc/one/monitord.conf").read_text())
    network = monitord.get("NETWORK")
    assert isinstance(network, dict)
    assert network["MONITOR_ADDRESS"] == "10.0.0.5"
    assert network["PORT"] == "4124"  # other keys kept
    packaged = oneconf.parse((root / "usr/share/one/etc-dist/monitord.conf").read_text())
    assert pairs(monitord, {"NETWORK"}) == pairs(packaged, {"NETWORK"})


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_overrides_scalar_vector_merge_and_list_replace(
    make_root: MakeRoot, tmp_path: Path, version: str
) -> None:
    root = make_root(version)
    config = write_config(tmp_path, """\
oned:
  DEFAULT_UMASK: 117
  VNC_PORTS: {START: 6000}
  VM_MAD:
    - {NAME: kvm, EXECUTABLE: one_vmm_exec, ARGUMENTS: "-t 15 -r 0 kvm -p", TYPE: kvm}
    - {NAME: dummy, EXECUTABLE: one_vmm_dummy, TYPE: xml}
  NEW_KEY: "hello"
monitord:
  PROBES_PERIOD: {STATE_VM: 10}
oneflow:
  ":port": 2475
  ":log": {":level": 0}
""")
    render_into(root, {"ONERUN_CONFIG": config})
    document = oned(root)
    assert document.get_all("DEFAULT_UMASK") == ["117"]
    vnc = document.get("VNC_PORTS")
    assert isinstance(vnc, dict) and vnc["START"] == "6000" and vnc["RESERVED"] == "32768:65536"
    assert document.get_all("VM_MAD") == [
        {"NAME": "kvm", "EXECUTABLE": "one_vmm_exec", "ARGUMENTS": "-t 15 -r 0 kvm -p",
         "TYPE": "kvm"},
        {"NAME": "dummy", "EXECUTABLE": "one_vmm_dummy", "TYPE": "xml"},
    ]
    assert document.get("NEW_KEY") == "hello"
    names = [a.name for a in document.attributes()]
    single = [n for n in set(names) if n not in ("VM_MAD",) and names.count(n) > 1]
    packaged = oneconf.parse((root / "usr/share/one/etc-dist/oned.conf").read_text())
    packaged_names = [a.name for a in packaged.attributes()]
    # no single-valued key we touched is left duplicated; multi-valued ones are as packaged
    assert all(names.count(n) == packaged_names.count(n) for n in single)
    touched = OWNED | {"DEFAULT_UMASK", "VNC_PORTS", "VM_MAD", "NEW_KEY"}
    assert pairs(document, touched) == pairs(packaged, touched)
    monitord = oneconf.parse((root / "etc/one/monitord.conf").read_text())
    probes = monitord.get("PROBES_PERIOD")
    assert isinstance(probes, dict) and probes["STATE_VM"] == "10" and len(probes) > 1
    flow = yamlconf.load((root / "etc/one/oneflow-server.conf").read_text()).data
    assert flow[":port"] == 2475 and flow[":host"] == "0.0.0.0"
    assert flow[":log"][":level"] == 0 and flow[":log"][":system"] == "file"


def anchors_and_aliases(text: str) -> list[str]:
    """Every anchor or alias in ``text``, read from the YAML event stream itself."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import AliasEvent

    found = []
    for event in YAML(typ="safe", pure=True).parse(text):
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            found.append(f"{type(event).__name__} {event.anchor}")
    return found


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_yaml_anchors_in_onerun_config_are_expanded(make_root: MakeRoot, version: str,
                                                     tmp_path: Path) -> None:
    """Ruby's YAML.safe_load refuses aliases: the rendered file must hold plain copies."""
    root = make_root(version)
    config = write_config(tmp_path, """\
oneflow:
  ":log": &log {":level": 0, ":system": std}
  ":extra": {":log": *log, ":list": &list [a, b]}
  ":again": *list
fireedge:
  log: *log
  other: *log
""")
    render_into(root, {"ONERUN_CONFIG": config})
    text = (root / "etc/one/oneflow-server.conf").read_text()
    assert anchors_and_aliases(text) == []
    flow = yamlconf.load(text).data
    assert flow[":log"] == {":level": 0, ":system": "std"}
    assert flow[":extra"][":log"] == {":level": 0, ":system": "std"}
    assert flow[":extra"][":list"] == ["a", "b"] and flow[":again"] == ["a", "b"]
    assert anchors_and_aliases((root / "etc/one/fireedge-server.conf").read_text()) == []


@pytest.mark.parametrize(("version", "path"), [("7.0.0", (":host",)),
                                               ("7.4.0", (":server", ":bind"))])
def test_onegate_listen_address_in_release_format(
    make_root: MakeRoot, version: str, path: tuple[str, ...]
) -> None:
    root = make_root(version)
    render_into(root, {"ONERUN_LISTEN_ADDRESS": "0.0.0.0"})
    text = (root / "etc/one/onegate-server.conf").read_text()
    document = yamlconf.load(text)
    assert yamlconf.get_path(document, path) == "0.0.0.0"
    assert "# OneGate Server Configuration" in text or text.count("#") > 10  # comments kept


def test_section_for_a_file_not_installed_is_noted(make_root: MakeRoot, tmp_path: Path) -> None:
    root = make_root("7.0.0")  # 7.0 has no OneForm, no OneKS
    config = write_config(tmp_path, "oneform:\n  ':port': 1\noneks:\n  ':x': 1\n")
    actions = render_into(root, {"ONERUN_CONFIG": config})
    notes = [a for a in actions if isinstance(a, Check)]
    assert [(n.name, n.result) for n in notes] == [
        ("render oneform-server.conf", "skipped"), ("render oneks-server.conf", "skipped")]
    assert not (root / "etc/one/oneform-server.conf").exists()


@pytest.mark.parametrize(
    ("body", "variable"),
    [
        ("oned:\n  VM_MAD: {NAME: x}\n", "ONERUN_CONFIG: oned.VM_MAD"),  # 3 occurrences
        ("oned:\n  LOG: file\n", "ONERUN_CONFIG: oned.LOG"),  # a vector given a scalar
        ("oned:\n  PORT: {X: 1}\n", "ONERUN_CONFIG: oned.PORT"),  # a single given a mapping
        ("oned:\n  SECRET_THING: 'abc\\'\n", "ONERUN_CONFIG: oned.SECRET_THING"),
    ],
)
def test_bad_overrides_are_refused_naming_the_key(
    make_root: MakeRoot, tmp_path: Path, body: str, variable: str
) -> None:
    root = make_root("7.4.0")
    config = write_config(tmp_path, body)
    with pytest.raises(SettingsError) as caught:
        render.render_configs(load_settings({"ONERUN_CONFIG": config}, root=root), Layout(root))
    assert [p.variable for p in caught.value.problems] == [variable]
    assert "abc" not in str(caught.value)
    assert not (root / "etc/one").exists()


def test_rendering_is_deterministic(make_root: MakeRoot, tmp_path: Path) -> None:
    config = write_config(tmp_path, "oned:\n  VNC_PORTS: {START: 6000}\n")
    env = {"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": PASSWORD,
           "ONERUN_CONFIG": config, "OPENNEBULA_HOSTNAME": "one"}
    outputs = []
    for name in ("a", "b"):
        root = make_root("7.4.0", name=name)
        actions = render.render_configs(load_settings(env, root=root), Layout(root))
        outputs.append([(str(a.path.relative_to(root)), a.content, a.mode)
                        for a in actions if isinstance(a, WriteFile)])
    assert outputs[0] == outputs[1]


def test_missing_etc_dist_is_refused_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(UnsafeStateError) as caught:
        render.render_configs(load_settings({}, root=tmp_path), Layout(tmp_path))
    assert "etc-dist" in caught.value.fix


def test_unparsable_packaged_file_is_refused(tmp_path: Path) -> None:
    dist = tmp_path / "usr/share/one/etc-dist"
    dist.mkdir(parents=True)
    (dist / "oned.conf").write_text("DB = [ BACKEND = \n")
    with pytest.raises(UnsafeStateError, match=r"oned\.conf cannot be parsed"):
        render.render_configs(load_settings({}, root=tmp_path), Layout(tmp_path))


def test_demo_etc_dist_renders(tmp_path: Path) -> None:
    shutil.copytree(PROJECT / "demo/etc-dist", tmp_path / "usr/share/one/etc-dist")
    render_into(tmp_path, {"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": PASSWORD,
                           "OPENNEBULA_HOSTNAME": "one.example"})
    text = (tmp_path / "etc/one/oned.conf").read_text()
    assert read_db_vector_independently(text)["PASSWD"] == PASSWORD
    assert oneconf.parse(text).get("HOSTNAME") == "one.example"
    gate = yamlconf.load((tmp_path / "etc/one/onegate-server.conf").read_text())
    assert yamlconf.get_path(gate, (":server", ":bind")) == "0.0.0.0"


# ------------------------------------------------------------------ generated passwords
# What the password rule (onerun/settings/rules.py) allows: printable, no '"' '\' "'" or
# whitespace, no "]]>".
# (these categories are exactly what str.isprintable rejects, whitespace included)
_allowed_char = st.characters(
    blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp"),
    blacklist_characters='"\\\'',
)
_allowed = st.text(_allowed_char, min_size=1, max_size=64).filter(
    lambda s: "]]>" not in s and len(s.encode()) <= 256)


@settings(max_examples=200, deadline=None)
@given(password=_allowed)
def test_any_allowed_password_round_trips(password: str) -> None:
    loaded = load_settings({"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": password})
    document = oneconf.parse('# packaged\nDB = [ BACKEND = "sqlite",\n  TIMEOUT = 2500 ]\n')
    document.set_text("DB", render.db_vector(loaded))
    text = document.dump()
    db = oneconf.parse(text).get("DB")
    assert isinstance(db, dict) and db["PASSWD"] == password
    assert read_db_vector_independently(text)["PASSWD"] == password


_forbidden = st.one_of(
    st.tuples(_allowed, st.sampled_from(['"', "\\", "'", " ", "\t", "\n", "]]>"]), _allowed)
    .map("".join),
    st.just(""),
    st.text(st.sampled_from("abc,#=[]:!"), min_size=257, max_size=300),
)


@settings(max_examples=60, deadline=None)
@given(password=_forbidden)
def test_forbidden_passwords_are_refused_without_being_shown(password: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"DB_BACKEND": "mysql", "DB_HOST": "db", "DB_PASSWORD": password})
    assert {p.variable for p in caught.value.problems} == {"DB_PASSWORD"}
    if len(password) > 3:
        assert password not in str(caught.value)


@pytest.mark.parametrize("password", ["ends-with\\", "a]]>b"])
def test_engine_refuses_what_oned_cannot_read_even_past_settings(password: str) -> None:
    # Settings bypassed on purpose: the engine is the last line of defence.
    direct = Settings(db_backend="mysql", db_host="db", db_password=Secret(password))
    with pytest.raises(oneconf.UnwritableValueError) as caught:
        render.db_vector(direct)
    assert caught.value.attribute == "DB/PASSWD"
    assert password not in str(caught.value)


# ------------------------------------------------------------------ the command
def run_render(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        [sys.executable, "-m", "onerun", "render", "--root", str(root)],
        cwd=PROJECT, env=clean, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_render_command_end_to_end(make_root: MakeRoot, version: str) -> None:
    root = make_root(version)
    result = run_render(root, DB_BACKEND="mysql", DB_HOST="db", DB_PASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    text = (root / "etc/one/oned.conf").read_text()
    assert read_db_vector_independently(text)["PASSWD"] == PASSWORD
    dist = root / "usr/share/one/etc-dist"
    assert sorted(p.relative_to(dist) for p in dist.rglob("*")) == sorted(
        p.relative_to(root / "etc/one") for p in (root / "etc/one").rglob("*"))


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_render_command_refuses_a_quote_in_the_password(
    make_root: MakeRoot, version: str
) -> None:
    root = make_root(version)
    result = run_render(root, DB_BACKEND="mysql", DB_HOST="db", DB_PASSWORD='a"b')
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "DB_PASSWORD" in output
    assert 'a"b' not in output
    assert not (root / "etc/one").exists()
