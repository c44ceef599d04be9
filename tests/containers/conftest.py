"""Fixtures of the container tier: the engine, the images, and a per-test Engine that
removes every container and volume the test made, also after a failure.

Where the tier cannot run (no engine, or no ../shared/opennebula-build to build the images
from), it skips with the reason; REQUIRE_CONTAINERS=1 (make test, .ci/run) turns that skip
into a failure. BOOT_IMAGE and BOOT_PREVIOUS_IMAGE (build.yml: the release image and the
last released one, X.Y.Z tags) replace the images built from the trees; only MariaDB and
the helper image are built then, over TEST_BASE_IMAGE.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Ryuk, testcontainers' reaper, is an image to pull, which these machines cannot: every
# test removes what it made itself (tier.Engine). Set before testcontainers reads its config.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import pytest
import tier

from ci import boot_test, testimages

REQUIRE = os.environ.get("REQUIRE_CONTAINERS") == "1"


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason}, but REQUIRE_CONTAINERS=1 demands the container tier runs")
    pytest.skip(reason)


@dataclass(frozen=True)
class TierImages:
    """The image under test, the one an upgrade starts from, MariaDB, and the helper."""

    current: str
    previous: str | None  # None: a first release, nothing to upgrade from
    mariadb: str
    helper: str
    current_version: str
    previous_version: str | None


@pytest.fixture(scope="session")
def docker_client() -> Any:
    reason = boot_test.docker_unavailable_reason()
    if reason is not None:
        unavailable(reason)
    import docker

    return docker.from_env()


@pytest.fixture(scope="session")
def images(docker_client: Any) -> TierImages:
    """Built here from ../shared/opennebula-build (the newest release is the current one),
    or the release workflow's BOOT_IMAGE and BOOT_PREVIOUS_IMAGE (X.Y.Z tags)."""
    release = boot_test.Images.from_env() if os.environ.get("BOOT_IMAGE") else None
    if release is None:
        reason = testimages.missing_inputs_reason()
        if reason is not None:
            unavailable(reason)
    built = testimages.ensure()
    if release is not None:
        previous = release.previous
        return TierImages(release.current, previous, built.mariadb, built.base,
                          release.current.rpartition(":")[2],
                          previous.rpartition(":")[2] if previous else None)
    versions = sorted(built.frontends, key=lambda v: tuple(int(p) for p in v.split(".")))
    current, previous = versions[-1], versions[0]
    return TierImages(built.frontends[current], built.frontends[previous], built.mariadb,
                      built.base, current, previous)


@pytest.fixture
def engine(docker_client: Any, images: TierImages) -> Iterator[tier.Engine]:
    made = tier.Engine(docker_client, images.helper)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def pod(engine: tier.Engine) -> tier.Pod:
    return tier.Pod.create(engine)
