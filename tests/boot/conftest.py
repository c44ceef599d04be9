"""Boot-test fixtures: a Docker engine or a skip (a failure with REQUIRE_DOCKER=1), named
volumes and containers that are removed afterwards."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from testcontainers.core.network import Network

from ci import boot_test


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """docker-py's client; the skip reason says why no engine is usable."""
    reason = boot_test.docker_unavailable_reason()
    if reason is not None:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"{reason}, but REQUIRE_DOCKER=1 demands the boot tests run")
        pytest.skip(reason)
    import docker

    return docker.from_env()


@pytest.fixture(scope="session")
def images(docker_client: Any) -> boot_test.Images:
    found = boot_test.Images.from_env()
    docker_client.images.get(found.current)  # fails clearly when the image was not built
    return found


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(18)


@pytest.fixture
def volume(docker_client: Any) -> Iterator[str]:
    """A fresh named volume for /var/lib/one."""
    name = f"onerun-boot-{uuid.uuid4().hex[:10]}"
    docker_client.volumes.create(name)
    yield name
    docker_client.volumes.get(name).remove(force=True)


@pytest.fixture
def network(docker_client: Any) -> Iterator[Network]:
    """A private network (the front-end reaches MariaDB by alias); removed after the
    containers, since tests request it before ``started``."""
    net = Network().create()
    yield net
    net.remove()


@pytest.fixture
def started() -> Iterator[Callable[[Any], Any]]:
    """Start testcontainers containers and always remove them, newest first."""
    running: list[Any] = []

    def start(container: Any) -> Any:
        container.start()
        running.append(container)
        return container

    yield start
    for container in reversed(running):
        container.stop()
