"""Boot tests of the built image (testcontainers). They need a Docker engine: without one
they skip with "no Docker engine available"; REQUIRE_DOCKER=1 (set in the build workflow)
turns that skip into a failure. The image under test is BOOT_IMAGE (default
onerun/opennebula:test); the upgrade test starts BOOT_PREVIOUS_IMAGE first."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from ci import boot_test

pytestmark = pytest.mark.docker

Start = Callable[[Any], Any]


def frontend(image: str, env: dict[str, str], volume: str,
             network: Network | None = None) -> DockerContainer:
    container = DockerContainer(image).with_envs(**env)
    container.with_volume_mapping(volume, "/var/lib/one", "rw")
    if network is not None:
        container.with_network(network)
    return container


def assert_login(container: Any, password: str) -> None:
    xml = str(boot_test.api_call(container, "oneadmin", password, "one.user.info", 0))
    assert "<NAME>oneadmin</NAME>" in xml
    with pytest.raises(boot_test.BootTestError, match="authenticated"):
        boot_test.api_call(container, "oneadmin", password + "x", "one.user.info", 0)


def test_sqlite_boot_reaches_readiness(
    images: boot_test.Images, volume: str, password: str, started: Start
) -> None:
    box = started(frontend(images.current, boot_test.frontend_env(password), volume))
    container = box.get_wrapped_container()
    boot_test.wait_ready(container)
    assert_login(container, password)


def test_mariadb_boot_reaches_readiness(
    images: boot_test.Images, volume: str, password: str, network: Network, started: Start
) -> None:
    db_password = secrets.token_urlsafe(18)
    db = DockerContainer(boot_test.MARIADB_IMAGE).with_envs(
        **boot_test.mariadb_env(secrets.token_urlsafe(18), db_password)
    )
    db.with_network(network).with_network_aliases(boot_test.MARIADB_ALIAS)
    boot_test.wait_mariadb(started(db).get_wrapped_container())
    env = boot_test.mysql_frontend_env(password, db_password)
    box = started(frontend(images.current, env, volume, network))
    container = box.get_wrapped_container()
    boot_test.wait_ready(container)
    assert_login(container, password)


def test_restart_keeps_data_and_login(
    images: boot_test.Images, volume: str, password: str, started: Start
) -> None:
    box = started(frontend(images.current, boot_test.frontend_env(password), volume))
    container = box.get_wrapped_container()
    boot_test.wait_ready(container)
    template = boot_test.create_marker_template(container, password, "boot-restart")

    container.restart(timeout=120)
    boot_test.wait_ready(container)
    assert boot_test.template_name(container, password, template) == "boot-restart"
    assert_login(container, password)


def test_previous_image_volume_upgrades(
    images: boot_test.Images, docker_client: Any, volume: str, password: str, started: Start
) -> None:
    if images.previous is None:
        reason = images.why_no_upgrade_test(os.environ.get("REQUIRE_DOCKER") == "1")
        if reason is None:
            pytest.fail("BOOT_PREVIOUS_IMAGE is not set but the boot tests are required "
                        "(REQUIRE_DOCKER=1); set BOOT_FIRST_RELEASE=1 only for a first release")
        pytest.skip(reason)
    docker_client.images.pull(images.previous)
    old_box = started(frontend(images.previous, boot_test.frontend_env(password), volume))
    old = old_box.get_wrapped_container()
    boot_test.wait_ready(old)
    template = boot_test.create_marker_template(old, password, "boot-upgrade")
    old.stop(timeout=120)  # SIGTERM, as Kubernetes does before the new pod starts

    new_box = started(frontend(images.current, boot_test.frontend_env(password), volume))
    new = new_box.get_wrapped_container()
    boot_test.wait_ready(new)
    assert boot_test.template_name(new, password, template) == "boot-upgrade"
    assert_login(new, password)
    labels = docker_client.images.get(images.current).labels
    version = boot_test.api_call(new, "oneadmin", password, "one.system.version")
    assert version == labels["io.onerun.opennebula.version"]
