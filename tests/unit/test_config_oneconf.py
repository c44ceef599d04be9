"""The template-grammar engine: byte-exact round trips, oned's lexing rules, in-place edits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testlib import PROJECT, UPSTREAM, UPSTREAM_VERSIONS, require_shared

from onerun.config import oneconf

# Files in the template grammar (one_drs.conf and the *-server.conf files are YAML).
TEMPLATE_FILES = ("oned.conf", "monitord.conf", "rank.conf")
DEMO = PROJECT / "demo" / "etc-dist"


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
@pytest.mark.parametrize("name", TEMPLATE_FILES)
def test_upstream_file_round_trips_byte_for_byte(version: str, name: str) -> None:
    path = require_shared(UPSTREAM / version / "etc" / name)
    text = path.read_text(encoding="utf-8")
    document = oneconf.parse(text)
    assert document.dump() == text
    assert document.attributes()  # it really parsed something


@pytest.mark.parametrize("name", ["oned.conf", "monitord.conf"])
def test_demo_file_round_trips(name: str) -> None:
    text = (DEMO / name).read_text(encoding="utf-8")
    assert oneconf.parse(text).dump() == text


def test_upstream_oned_values_as_oned_reads_them() -> None:
    text = require_shared(UPSTREAM / "7.4.0" / "etc" / "oned.conf").read_text()
    document = oneconf.parse(text)
    assert document.get("DB") == {"BACKEND": "sqlite", "TIMEOUT": "2500"}
    # the comment inside VNC_PORTS is skipped, as flex skips it
    assert document.get("vnc_ports") == {"START": "5900", "RESERVED": "32768:65536"}
    assert document.get("SCRIPTS_REMOTE_DIR") == "/var/tmp/one"
    assert len(document.get_all("VM_MAD")) == 3
    operations = document.get("VM_ADMIN_OPERATIONS")
    assert isinstance(operations, str) and "\n" in operations  # quoted strings span lines
    assert document.get("HOSTNAME") is None  # only in a comment


def test_grammar_details() -> None:
    text = (
        'a = 1\n'
        'B = "x\\"y"\n'          # \" unescapes to "
        'C = "x\\\\y"\n'         # \\ is not an escape: two backslashes stay
        'EMPTY =\n'
        'V = [ K = 1, k = 2,\n  # comment inside\n  L = "p,a#s=s[1]:x" ]\n'
        'NOTHING = [ ]\n'
    )
    document = oneconf.parse(text)
    assert document.dump() == text
    assert document.get("A") == "1"
    assert document.get("B") == 'x"y'
    assert document.get("C") == "x\\\\y"
    assert document.get("EMPTY") == ""
    assert document.get("V") == {"K": "1", "L": "p,a#s=s[1]:x"}  # first K wins (map insert)
    assert document.get("NOTHING") == {}


def test_quoted_value_takes_the_longest_match_like_flex() -> None:
    # A value ending in a backslash swallows text up to a later quote (template_parser.l).
    document = oneconf.parse('A = "abc\\"\nB = "\n')
    assert document.get("A") == 'abc"\nB = '
    assert "B" not in document
    with pytest.raises(oneconf.TemplateSyntaxError):
        oneconf.parse('A = "abc\\"\nB = "d"\n')


def test_cdata_aborts_parsing() -> None:
    with pytest.raises(oneconf.TemplateSyntaxError, match="line 2"):
        oneconf.parse('A = 1\nB = "x]]>y"\n')


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(oneconf.TemplateSyntaxError, match="line 3"):
        oneconf.parse("A = 1\n\nV = [ K = 1 K2 = 2 ]\n")


def test_set_replaces_in_place_and_drops_later_duplicates() -> None:
    text = "# head\nX = 1\nY = 2\nX = 3\n# tail\n"
    document = oneconf.parse(text)
    document.set("x", 9)
    assert document.dump() == "# head\nX = 9\nY = 2\n# tail\n"
    assert document.get_all("X") == ["9"]


def test_set_adds_a_missing_attribute_at_the_end() -> None:
    document = oneconf.parse("A = 1")
    document.set("HOSTNAME", "one.example")
    assert document.dump() == 'A = 1\nHOSTNAME = "one.example"\n'


def test_set_all_writes_items_where_the_first_stood() -> None:
    text = 'M = [ N = "a" ]\nOTHER = 1\nM = [ N = "b" ]\n'
    document = oneconf.parse(text)
    document.set_all("M", [{"N": "c"}, {"N": "d", "T": 2}])
    reparsed = oneconf.parse(document.dump())
    assert reparsed.get_all("M") == [{"N": "c"}, {"N": "d", "T": "2"}]
    names = [attribute.name for attribute in reparsed.attributes()]
    assert names == ["M", "M", "OTHER"]


def test_merge_vector_keeps_other_keys_and_their_quoting() -> None:
    document = oneconf.parse('VLAN_IDS = [\n    START = "2",\n    RESERVED = "0, 1, 4095"\n]\n'
                             "VNC = [ START = 5900 ]\n")
    document.merge_vector("vlan_ids", {"start": 10})
    document.merge_vector("VNC", {"START": 6000, "NEW": 1, "LABEL": "x"})
    text = " ".join(document.dump().split())  # alignment aside
    assert 'START = "10"' in text  # the packaged file quoted START here
    assert "START = 6000" in text and "NEW = 1" in text and 'LABEL = "x"' in text
    reparsed = oneconf.parse(document.dump())
    assert reparsed.get("VLAN_IDS") == {"START": "10", "RESERVED": "0, 1, 4095"}
    assert reparsed.get("VNC") == {"START": "6000", "NEW": "1", "LABEL": "x"}


def test_merge_vector_refuses_a_single_value() -> None:
    document = oneconf.parse("A = 1\n")
    with pytest.raises(TypeError, match="A is a single value"):
        document.merge_vector("A", {"K": 1})


def test_strings_are_quoted_and_booleans_become_yes_no() -> None:
    document = oneconf.parse("")
    document.set("S", "12")
    document.set("B", True)
    document.set("N", 12)
    assert document.dump() == 'S = "12"\nB = "YES"\nN = 12\n'


def test_remove_takes_its_line() -> None:
    document = oneconf.parse("A = 1\nB = 2\nC = 3\n")
    document.remove("B")
    assert document.dump() == "A = 1\nC = 3\n"


def test_set_text_checks_the_fragment() -> None:
    document = oneconf.parse("DB = [ BACKEND = \"sqlite\" ]\n")
    with pytest.raises(ValueError, match="exactly that attribute"):
        document.set_text("DB", 'OTHER = "x"')
    document.set_text("DB", '\nDB = [ BACKEND = "mysql" ]\n')
    assert document.dump() == 'DB = [ BACKEND = "mysql" ]\n'


@pytest.mark.parametrize(
    ("value", "rule"),
    [("secret\\", "backslash"), ("a]]>b", "]]>"), ("a\0b", "NUL")],
)
def test_unwritable_values_are_refused_without_showing_them(value: str, rule: str) -> None:
    document = oneconf.parse("")
    with pytest.raises(oneconf.UnwritableValueError) as caught:
        document.set("DB", {"PASSWD": value})
    assert caught.value.attribute == "DB/PASSWD"
    assert rule in str(caught.value)
    assert value not in str(caught.value)
    assert document.dump() == ""  # nothing changed


def test_bad_attribute_names_are_refused() -> None:
    with pytest.raises(ValueError, match="attribute name"):
        oneconf.parse("").set("A-B", 1)


# Any text oned can hold in a quoted value: no trailing backslash, no "]]>", no NUL.
_writable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60).filter(
    lambda s: not s.endswith("\\") and "]]>" not in s and "\0" not in s
)


@given(value=_writable)
def test_any_writable_value_reads_back_the_same(value: str) -> None:
    document = oneconf.parse("# packaged\nDB = [ BACKEND = \"sqlite\" ]\nX = 1\n")
    document.set("DB", {"BACKEND": "mysql", "PASSWD": value})
    document.set("SINGLE", value)
    reparsed = oneconf.parse(document.dump())
    assert reparsed.get("DB") == {"BACKEND": "mysql", "PASSWD": value}
    assert reparsed.get("SINGLE") == value
    assert reparsed.get("X") == "1"

