"""ci.analyze on handwritten inputs: the apt Packages indexes in tests/ci/data (the real ones
cannot be downloaded here) and small package payloads written by the tests below, laid out
the way ``dpkg-deb -x`` unpacks them."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from ci import analyze
from ci.versions import REPO_URL, packages_url
from onerun.versions import Version

DATA = Path(__file__).parent / "data"

SCHEMA = "usr/lib/one/ruby/onedb/database_schema.rb"
OPENNEBULA_RB = "usr/lib/one/ruby/opennebula.rb"


def schema(version: str) -> str:
    return (f"class OneDBBacKEnd\nend\nLATEST_DB_VERSION = '{version}'\n"
            f"LATEST_LOCAL_DB_VERSION = '{version}'\n")


# package -> path -> content, per release (payload excerpts, handwritten).
PAYLOADS: dict[str, dict[str, dict[str, str | bytes]]] = {
    "7.0.0": {
        "opennebula": {
            "etc/one/oned.conf": 'PORT = 2633\nDB = [ BACKEND = "sqlite" ]\n',
            "etc/one/monitord.conf": "NETWORK = [ PORT = 4124 ]\n",
            "lib/systemd/system/opennebula.service": "[Service]\nExecStart=/usr/bin/oned -f\n",
            "lib/systemd/system/opennebula-hem.service": "[Service]\n",
            "lib/systemd/system/opennebula-showback.timer": "[Timer]\n",
            "usr/bin/oned": b"\x7fELF\x00one_auth\x00sunstone_auth\x00onegate_auth\x00"
                            b"oneflow_auth\x00core_auth\x00",
            SCHEMA: schema("7.0.0"),
            OPENNEBULA_RB: "module OpenNebula\n    VERSION = '7.0.0'\nend\n",
            "usr/lib/one/ruby/onedb/shared/6.10.0_to_7.0.0.rb": "module Migrator\nend\n",
            "usr/lib/one/ruby/onedb/local/6.10.0_to_7.0.0.rb": "module Migrator\nend\n",
        },
        "opennebula-gate": {
            "etc/one/onegate-server.conf": ":host: 127.0.0.1\n:port: 5030\n",
            "lib/systemd/system/opennebula-gate.service": "[Service]\n",
            "usr/lib/one/onegate/onegate-server.rb": "auth = '/var/lib/one/.one/onegate_auth'\n",
        },
        "opennebula-flow": {
            "etc/one/oneflow-server.conf": ":host: 127.0.0.1\n:port: 2474\n",
            "lib/systemd/system/opennebula-flow.service": "[Service]\n",
        },
        "opennebula-fireedge": {
            "etc/one/fireedge-server.conf": "host: 0.0.0.0\nport: 2616\n",
            "etc/one/fireedge/provision/provision-server.conf": "mode: legacy\n",
            "lib/systemd/system/opennebula-fireedge.service": "[Service]\n",
        },
        "opennebula-node-kvm": {  # in the repository, not installed: must not be reported
            "etc/one/node-only.conf": "x\n",
        },
    },
    "7.4.0": {
        "opennebula": {
            "etc/one/oned.conf": 'PORT = 2633\nGRPC_PORT = 2634\nDB = [ BACKEND = "sqlite" ]\n',
            "etc/one/monitord.conf": "NETWORK = [ PORT = 4124 ]\n",
            "lib/systemd/system/opennebula.service": "[Service]\nExecStart=/usr/bin/oned -f\n",
            "lib/systemd/system/opennebula-hem.service": "[Service]\n",
            "lib/systemd/system/opennebula-showback.timer": "[Timer]\n",
            "lib/systemd/system/opennebula-ks.service": "[Service]\n",
            "usr/bin/oned": b"\x7fELF\x00one_auth\x00sunstone_auth\x00onegate_auth\x00"
                            b"oneflow_auth\x00oneform_auth\x00oneks_auth\x00core_auth\x00",
            SCHEMA: schema("7.4.0"),
            OPENNEBULA_RB: "module OpenNebula\n    VERSION = '7.4.0'\nend\n",
            "usr/lib/one/ruby/onedb/shared/6.10.0_to_7.0.0.rb": "module Migrator\nend\n",
            "usr/lib/one/ruby/onedb/local/6.10.0_to_7.0.0.rb": "module Migrator\nend\n",
            "usr/lib/one/ruby/onedb/shared/7.0.0_to_7.2.0.rb": "module Migrator\nend\n",
            "usr/lib/one/ruby/onedb/local/7.2.0_to_7.4.0.rb": "module Migrator\nend\n",
        },
        "opennebula-gate": {
            "etc/one/onegate-server.conf": ":server:\n  :bind: 127.0.0.1\n  :port: 5030\n",
            "lib/systemd/system/opennebula-gate.service": "[Service]\n",
            "usr/lib/one/onegate/onegate-server.rb": "auth = '/var/lib/one/.one/onegate_auth'\n",
        },
        "opennebula-flow": {
            "etc/one/oneflow-server.conf": ":host: 127.0.0.1\n:port: 2474\n",
            "lib/systemd/system/opennebula-flow.service": "[Service]\n",
        },
        "opennebula-fireedge": {
            "etc/one/fireedge-server.conf": "host: 0.0.0.0\nport: 2616\n"
                                            "oneform_server: http://localhost:13013/api/v1\n",
            "lib/systemd/system/opennebula-fireedge.service": "[Service]\n",
        },
        "opennebula-form": {
            "etc/one/oneform-server.conf": ":host: 127.0.0.1\n:port: 13013\n",
            "lib/systemd/system/opennebula-form.service": "[Service]\n",
            "usr/lib/one/oneform/oneform-server.rb": "AUTH = ONE_LOCATION + '/oneform_auth'\n",
        },
    },
}


def lay_out(
    base: Path, version: str, payloads: dict[str, dict[str, str | bytes]]
) -> dict[str, Path]:
    roots = {}
    for package, files in payloads.items():
        root = base / version / package
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        roots[package] = root
    return roots


def release(base: Path, version: str) -> analyze.Release:
    packages = analyze.parse_packages((DATA / f"Packages-{version}").read_text())
    return analyze.Release(version, packages, lay_out(base, version, PAYLOADS[version]))


@pytest.fixture
def report(tmp_path: Path) -> analyze.Report:
    return analyze.analyze(release(tmp_path, "7.0.0"), release(tmp_path, "7.4.0"))


def test_parse_packages_reads_stanzas_and_continuations() -> None:
    packages = analyze.parse_packages((DATA / "Packages-7.0.0").read_text())
    assert len(packages) == 12
    guacd = packages["opennebula-guacd"]
    assert guacd["Version"] == "7.0.0-1"
    assert guacd["Filename"] == "pool/opennebula/opennebula-guacd_7.0.0-1_amd64.deb"
    assert guacd["Description"].splitlines()[1].startswith("The Apache Guacamole proxy")


def test_installed_closure_follows_depends_not_recommends(tmp_path: Path) -> None:
    old = release(tmp_path, "7.0.0")
    assert old.installed == [
        "opennebula", "opennebula-common", "opennebula-common-onecfg", "opennebula-fireedge",
        "opennebula-flow", "opennebula-gate", "opennebula-guacd", "opennebula-libs",
        "opennebula-rubygems", "opennebula-tools",
    ]
    assert "opennebula-form" in release(tmp_path, "7.4.0").installed


def test_package_versions_and_repository_changes(report: analyze.Report) -> None:
    table = {name: (old, new) for name, old, new in report.versions}
    assert table["opennebula"] == ("7.0.0-1", "7.4.0-1")
    assert table["opennebula-form"] == ("-", "7.4.0-1")
    assert "opennebula-node-kvm" not in table
    assert report.added_packages == ["opennebula-form"]
    assert report.removed_packages == []


def test_dependency_changes_ignore_release_constraints(report: analyze.Report) -> None:
    added, removed = report.dependency_changes["opennebula"]
    assert "Depends: libgrpc++1.51t64 (>= 1.51.1)" in added
    assert "Depends: libprotobuf32t64 (>= 3.21.12)" in added
    assert "Recommends: opennebula-form" in added
    assert removed == []
    assert report.dependency_changes["opennebula-fireedge"] == (
        ["Depends: nodejs (>= 22)"], ["Depends: nodejs (>= 20)"]
    )
    # only the (= <release>-1) constraints changed in these
    assert "opennebula-tools" not in report.dependency_changes
    assert "opennebula-gate" not in report.dependency_changes


def test_etc_one_of_every_installed_package(report: analyze.Report) -> None:
    # OneGate's 7.4 config format change lives in opennebula-gate, not in opennebula.
    assert set(report.etc_changed) == {
        "etc/one/oned.conf", "etc/one/onegate-server.conf", "etc/one/fireedge-server.conf"
    }
    assert "+:server:" in report.etc_changed["etc/one/onegate-server.conf"]
    assert "-:host: 127.0.0.1" in report.etc_changed["etc/one/onegate-server.conf"]
    assert report.etc_added == [("etc/one/oneform-server.conf", "opennebula-form")]
    assert report.etc_removed == [
        ("etc/one/fireedge/provision/provision-server.conf", "opennebula-fireedge")
    ]


def test_database_schema_signals(report: analyze.Report) -> None:
    assert report.new_migrators == [
        "usr/lib/one/ruby/onedb/local/7.2.0_to_7.4.0.rb",
        "usr/lib/one/ruby/onedb/shared/7.0.0_to_7.2.0.rb",
    ]
    assert report.schema == (
        (Version.parse("7.0.0"), Version.parse("7.0.0")),
        (Version.parse("7.4.0"), Version.parse("7.4.0")),
    )


def test_auth_files_and_services(report: analyze.Report) -> None:
    assert report.new_auth_names == ["oneform_auth", "oneks_auth"]
    assert report.unknown_auth_names == []  # onerun already knows both
    assert report.added_units == ["opennebula-form.service", "opennebula-ks.service"]
    assert report.removed_units == []


def test_unknown_auth_name_is_flagged(tmp_path: Path) -> None:
    old = release(tmp_path / "a", "7.0.0")
    new = release(tmp_path / "b", "7.4.0")
    oned = new.roots["opennebula"] / "usr/bin/oned"
    oned.write_bytes(oned.read_bytes() + b"onedrs_auth\x00")
    report = analyze.analyze(old, new)
    assert report.unknown_auth_names == ["onedrs_auth"]
    assert "Not in onerun's SERVICE_AUTH_FILES" in analyze.render_markdown(report)


def test_markdown_report(report: analyze.Report) -> None:
    text = analyze.render_markdown(report)
    assert text.startswith("## OpenNebula 7.0.0 -> 7.4.0: release analysis")
    assert "| opennebula-form | - | 7.4.0-1 |" in text
    assert "+ Depends: libgrpc++1.51t64 (>= 1.51.1)" in text
    assert "<details><summary>etc/one/onegate-server.conf</summary>" in text
    assert "new migrator `usr/lib/one/ruby/onedb/shared/7.0.0_to_7.2.0.rb`" in text
    assert "runs `onedb upgrade`" in text
    assert "new `opennebula-ks.service`" in text


def test_identical_releases_report_no_change(tmp_path: Path) -> None:
    same = release(tmp_path, "7.4.0")
    report = analyze.analyze(same, same)
    assert not (report.dependency_changes or report.etc_changed or report.etc_added
                or report.new_migrators or report.added_units or report.new_auth_names)
    assert "runs `onedb upgrade`" not in analyze.render_markdown(report)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_download_release_checks_and_unpacks_real_debs(tmp_path: Path) -> None:
    """Build real .deb files with dpkg-deb and serve them as the repository would."""
    served: dict[str, bytes] = {}
    stanzas = []
    for name, files in (("opennebula", {"etc/one/oned.conf": "PORT = 2633\n"}),
                        ("opennebula-common", {"usr/share/doc/x": "x\n"})):
        tree = tmp_path / "build" / name
        (tree / "DEBIAN").mkdir(parents=True)
        depends = "Depends: opennebula-common (= 7.4.0-1)\n" if name == "opennebula" else ""
        (tree / "DEBIAN/control").write_text(
            f"Package: {name}\nVersion: 7.4.0-1\nArchitecture: all\n"
            f"Maintainer: test <test@example.invalid>\n{depends}Description: stand-in\n"
        )
        lay_out(tmp_path / "tree", "x", {name: files})
        shutil.copytree(tmp_path / "tree/x" / name, tree, dirs_exist_ok=True)
        deb = tmp_path / f"{name}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)],
                       check=True, capture_output=True)
        data = deb.read_bytes()
        filename = f"pool/opennebula/{name}_7.4.0-1_all.deb"
        served[f"{REPO_URL}/7.4.0/Ubuntu/24.04/{filename}"] = data
        stanzas.append(f"Package: {name}\nVersion: 7.4.0-1\n{depends}Filename: {filename}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    served[packages_url("7.4.0")] = "\n".join(stanzas).encode()

    work = tmp_path / "work"
    work.mkdir()
    got = analyze.download_release("7.4.0", work, served.get)
    assert got.installed == ["opennebula", "opennebula-common"]
    assert got.read("etc/one/oned.conf") == b"PORT = 2633\n"

    first = next(u for u in served if u.endswith(".deb"))
    served[first] = served[first] + b"tampered"
    with pytest.raises(ValueError, match="SHA256"):
        analyze.download_release("7.4.0", tmp_path / "work", served.get)
