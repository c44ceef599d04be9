"""Version numbers compared as numbers, and the versions the image's Ruby files declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from testlib import RELEASE_FILES, extract_release_files, write_image_versions

from onerun.layout import Layout
from onerun.observe import observe_image
from onerun.versions import ImageVersions, Version, read_image_versions

# Handwritten in the shape of OpenNebula's src/oca/ruby/opennebula.rb (licence header,
# requires, then the constant inside the module), not copied from a release. The two
# constants before VERSION are decoys (one ends in VERSION) that must not be read.
OPENNEBULA_RB = """\
# -------------------------------------------------------------------------- #
# Copyright 2002-2025, OpenNebula Project, OpenNebula Systems                #
# Licensed under the Apache License, Version 2.0 (the "License")            #
# -------------------------------------------------------------------------- #

begin # require 'rubygems'
    require 'rubygems'
rescue Exception
end

require 'opennebula/xml_utils'
require 'opennebula/client'
require 'opennebula/error'

module OpenNebula

    DEFAULT_POOL_PAGE_SIZE = 300
    NO_VERSION = '0.0.0'

    # OpenNebula version
    VERSION = '7.0.2'
end
"""

# Handwritten in the shape of src/onedb/database_schema.rb: a class with schema hashes
# keyed by version strings, the two constants, and a method that mentions one of them.
DATABASE_SCHEMA_RB = """\
class OneDBBacKEnd
    SCHEMA = {
        cluster_pool: "oid INTEGER PRIMARY KEY, name VARCHAR(128), " <<
            "body MEDIUMTEXT, uid INTEGER, gid INTEGER"
    }

    VERSION_SCHEMA = {
        "5.3.80" => {
            logdb: "log_index INTEGER PRIMARY KEY, term INTEGER"
        }
    }

    LATEST_DB_VERSION = "7.0.0"
    LATEST_LOCAL_DB_VERSION = "7.0.0"

    def get_schema(type, version = nil)
        version = LATEST_DB_VERSION unless version
    end
end
"""


def v(text: str) -> Version:
    return Version.parse(text)


def test_parse_and_str() -> None:
    assert v("7.0.2").parts == (7, 0, 2)
    assert str(v(" 7.10.1\n")) == "7.10.1"
    assert v("7").parts == (7,)


def test_numeric_ordering() -> None:
    assert v("7.10") > v("7.4")
    assert v("7.4.0") > v("7.2.99")
    assert v("7.0.1") > v("7.0")
    assert v("6.10.0") < v("7.0.0")
    assert sorted(map(v, ["7.10.0", "7.4.0", "7.0.2", "6.99"])) == list(
        map(v, ["6.99", "7.0.2", "7.4.0", "7.10.0"]))


def test_trailing_zeros_are_equal_and_hash_alike() -> None:
    assert v("7.0") == v("7.0.0") == v("7")
    assert hash(v("7.0")) == hash(v("7.0.0"))
    assert len({v("7.0"), v("7.0.0"), v("7")}) == 1
    assert v("7.0") <= v("7.0.0") <= v("7.0")
    assert v("7.0.1") != v("7.0")
    assert v("7.0") != "7.0"


def test_minor_series() -> None:
    assert v("7.0.2").minor_series == "7.0"
    assert v("7.10.0").minor_series == "7.10"
    assert v("7").minor_series == "7.0"


@pytest.mark.parametrize("text", ["", "7.", ".7", "7..0", "v7.0", "7.0-rc1", "7.0 2", "latest"])
def test_bad_strings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a version number"):
        Version.parse(text)


def test_image_versions_from_stand_in_files(tmp_path: Path) -> None:
    write_image_versions(tmp_path, "7.4.1", "7.4.0")
    layout = Layout(tmp_path)
    found = read_image_versions(layout.release_files(), layout.database_schema_rb)
    assert found == ImageVersions(v("7.4.1"), v("7.4.0"), v("7.4.0"))


def test_image_versions_absent_files_are_none(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    found = read_image_versions(layout.release_files(), layout.database_schema_rb)
    assert found == ImageVersions(None, None, None)


def test_image_versions_from_realistic_ruby(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.database_schema_rb.parent.mkdir(parents=True)
    layout.opennebula_rb.write_text(OPENNEBULA_RB)
    layout.database_schema_rb.write_text(DATABASE_SCHEMA_RB)
    found = read_image_versions(layout.release_files(), layout.database_schema_rb)
    assert str(found.release) == "7.0.2"
    assert str(found.db_version) == "7.0.0"
    assert str(found.local_db_version) == "7.0.0"


def test_file_without_the_constant_gives_none(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.database_schema_rb.parent.mkdir(parents=True)
    layout.opennebula_rb.write_text("module OpenNebula\n    # no version here\nend\n")
    layout.database_schema_rb.write_text(
        'class OneDBBacKEnd\n    LATEST_DB_VERSION = "7.4.0"\nend\n')
    found = read_image_versions(layout.release_files(), layout.database_schema_rb)
    assert found == ImageVersions(None, v("7.4.0"), None)


def files_holding_version(root: Path) -> set[str]:
    """Which of the candidate Ruby files under ``root`` assign OpenNebula's VERSION."""
    return {name for name in RELEASE_FILES
            if (root / name).is_file() and "VERSION = '" in (root / name).read_text()}


@pytest.mark.parametrize(("release", "holder"), [
    ("7.0.0", "usr/lib/one/ruby/opennebula.rb"),
    ("7.4.0", "usr/lib/one/ruby/opennebula/version.rb"),
])
def test_release_read_from_the_real_tree(tmp_path: Path, release: str, holder: str) -> None:
    """7.0.x keeps VERSION in opennebula.rb; from 7.2.0 on only opennebula/version.rb has it."""
    extract_release_files(release, tmp_path)
    assert files_holding_version(tmp_path) == {holder}
    assert observe_image(Layout(tmp_path)).versions.release == v(release)


@pytest.mark.parametrize("release", ["7.0.0", "7.4.0"])
def test_stand_in_layout_is_the_real_layout(tmp_path: Path, release: str) -> None:
    real, stand_in = tmp_path / "real", tmp_path / "stand-in"
    real.mkdir()
    extract_release_files(release, real)
    write_image_versions(stand_in, release, release)
    assert files_holding_version(stand_in) == files_holding_version(real)
    assert observe_image(Layout(stand_in)).versions.release == v(release)


def test_a_74_image_stamps_its_remotes_with_its_release(tmp_path: Path) -> None:
    """A 7.4 image's remotes were stamped ``unknown+<digest>``: the release must be known."""
    write_image_versions(tmp_path, "7.4.0", "7.4.0")
    layout = Layout(tmp_path)
    (layout.remotes_dist / "im").mkdir(parents=True)
    (layout.remotes_dist / "VERSION").write_text("7.4.0\n")
    stamp = observe_image(layout).remotes_dist_stamp
    assert stamp is not None and stamp.startswith("7.4.0+")
