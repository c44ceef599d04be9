"""The Dockerfile's pins agree with the chart and the docs (hadolint checks style only)."""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = (PROJECT / "docker/Dockerfile").read_text()


def test_every_port_the_chart_serves_is_exposed() -> None:
    values = YAML(typ="safe", pure=True).load((PROJECT / "helm/opennebula/values.yaml").read_text())
    exposed: set[str] = set()
    for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE):
        exposed.update(line.split())
    for name, port in values["service"]["ports"].items():
        assert str(port) in exposed, f"{name} ({port}) is not in EXPOSE"
    assert {"4124", "4124/udp"} <= exposed  # monitord, TCP and UDP


def test_the_repository_key_is_pinned_and_verified() -> None:
    match = re.search(r"^ARG ONE_KEY_FINGERPRINT=([0-9A-F]+)$", DOCKERFILE, re.MULTILINE)
    assert match and len(match[1]) == 40, "a full 40-hex-digit fingerprint"
    assert '"${primary}" != "${ONE_KEY_FINGERPRINT}"' in DOCKERFILE
    assert "gpg --batch --show-keys --with-colons" in DOCKERFILE
    assert match[1] in (PROJECT / "docs/release.md").read_text()  # documented with its source
