"""YAML service configs: comments and Ruby symbol keys survive edits; each release's own format."""

from __future__ import annotations

import pytest
from testlib import PROJECT, UPSTREAM, UPSTREAM_VERSIONS, require_shared

from onerun.config import yamlconf

SERVICE_CONFIGS = (
    "oneflow-server.conf", "onegate-server.conf", "fireedge-server.conf",
    "oneform-server.conf", "onehem-server.conf", "oneks-server.conf",
)
SAMPLE = """\
# a comment that must survive
:host: 127.0.0.1   # trailing comment
:port: 2474

:log:
  :level: 2
  :system: 'file'

:list:
  - A
  - B
"""


def _comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "#" in line]


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
@pytest.mark.parametrize("name", SERVICE_CONFIGS)
def test_unedited_upstream_config_dumps_back_unchanged(version: str, name: str) -> None:
    path = UPSTREAM / version / "etc" / name
    require_shared(UPSTREAM / version)
    if not path.exists():
        pytest.skip(f"{name} is not shipped by {version}")
    text = path.read_text()
    assert yamlconf.load(text).dump() == text


def test_symbol_keys_load_as_strings_and_dump_back_as_symbols() -> None:
    document = yamlconf.load(SAMPLE)
    assert document.data[":host"] == "127.0.0.1"
    assert yamlconf.set_listen_address(document, "0.0.0.0") == (":host",)
    out = document.dump()
    assert ":host: 0.0.0.0" in out
    assert "':host'" not in out and '":host"' not in out
    assert "# a comment that must survive\n" in out
    assert [line.split() for line in _comments(out)][1] == [":host:", "0.0.0.0", "#", "trailing",
                                                            "comment"]


def test_deep_merge_rules() -> None:
    document = yamlconf.load(SAMPLE)
    yamlconf.deep_merge(document.data, {
        ":log": {":level": 0},          # mapping: merged, :system kept
        ":list": ["C"],                 # list: replaced
        ":port": 2475,                  # scalar: replaced
        ":new": {":a": 1},              # new key: added
    })
    reread = yamlconf.load(document.dump()).data
    assert reread[":log"] == {":level": 0, ":system": "file"}
    assert reread[":list"] == ["C"]
    assert reread[":port"] == 2475
    assert reread[":new"] == {":a": 1}
    assert "# a comment that must survive" in document.dump()


def test_set_path_creates_mappings() -> None:
    document = yamlconf.load(":a: 1\n")
    yamlconf.set_path(document, (":server", ":bind"), "::")
    assert yamlconf.get_path(document, (":server", ":bind")) == "::"
    assert yamlconf.get_path(document, (":server", ":missing")) is None
    assert yamlconf.load(document.dump()).data[":server"] == {":bind": "::"}


def test_listen_key_absent() -> None:
    document = yamlconf.load("host: 0.0.0.0\n")  # FireEdge style: not one of ours
    assert yamlconf.set_listen_address(document, "0.0.0.0") is None
    assert document.dump() == "host: 0.0.0.0\n"


@pytest.mark.parametrize(
    ("version", "name", "path"),
    [
        ("7.0.0", "onegate-server.conf", (":host",)),
        ("7.4.0", "onegate-server.conf", (":server", ":bind")),
        ("7.0.0", "oneflow-server.conf", (":host",)),
        ("7.4.0", "oneflow-server.conf", (":host",)),
        ("7.4.0", "oneform-server.conf", (":host",)),
        ("7.4.0", "oneks-server.conf", (":server", ":bind")),
    ],
)
def test_listen_address_in_each_release_format(
    version: str, name: str, path: tuple[str, ...]
) -> None:
    text = require_shared(UPSTREAM / version / "etc" / name).read_text()
    document = yamlconf.load(text)
    assert yamlconf.set_listen_address(document, "0.0.0.0") == path
    out = document.dump()
    reread = yamlconf.load(out)
    assert yamlconf.get_path(reread, path) == "0.0.0.0"
    if path[0] == ":server":  # 7.4 OneGate ignores a top-level :host:, so none is added
        assert ":host" not in reread.data
        assert yamlconf.get_path(reread, (":server", ":port")) is not None
    assert _comments(out) == _comments(text)
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "127.0.0.1" in changed[0][0]


def test_demo_onegate_is_the_74_layout() -> None:
    text = (PROJECT / "demo/etc-dist/onegate-server.conf").read_text()
    document = yamlconf.load(text)
    assert document.dump() == text
    assert yamlconf.listen_key(document) == (":server", ":bind")
