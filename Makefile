# Two entry points for a fresh machine (Debian/Ubuntu, root): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_APT_PACKAGES := python3-venv
APT_PACKAGES := $(DEMO_APT_PACKAGES) mariadb-server mariadb-client openssh-client
# The container tier: podman (its Docker-compatible API serves testcontainers) and mmdebstrap
# for the Debian 12 base image (docs/testing.md).
CONTAINER_APT_PACKAGES := podman runc mmdebstrap uidmap fuse-overlayfs slirp4netns zstd

.PHONY: demo test lint system-packages container-packages containers demo-packages venv clean

# onerun alone (the demo), or with every test dependency (the tests).
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# python3 -m venv needs Debian's/Ubuntu's python3-venv.
demo-packages:
	@if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(DEMO_APT_PACKAGES) >/dev/null; fi

# What the tests need from Debian: a MariaDB server they start privately, ssh-keygen.
system-packages: demo-packages
	@if ! command -v mariadbd >/dev/null || ! command -v ssh-keygen >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; fi

container-packages:
	@if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null \
	    || ! command -v runc >/dev/null || ! command -v zstd >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(CONTAINER_APT_PACKAGES) >/dev/null; fi

# podman's API service; the tier builds its images itself (ci/testimages.py).
containers: container-packages venv
	$(PY) -m ci.testimages engine

demo: demo-packages $(VENV)/.runtime
	$(PY) demo/run_demo.py

lint: venv
	$(VENV)/bin/ruff check onerun tests ci bench demo
	$(VENV)/bin/mypy

# REQUIRE_MARIADB=1: the tests against a real MariaDB must run, never skip; likewise
# REQUIRE_CONTAINERS=1 for the container tier where ../shared is beside the clone (CI).
CONTAINER_ENV := DOCKER_HOST=unix:///run/podman/podman.sock TESTCONTAINERS_RYUK_DISABLED=true
REQUIRE_CONTAINERS ?= $(if $(wildcard ../shared/opennebula-build),1,0)
# The floor of onerun/'s line coverage, as measured in the pytest process (docs/testing.md,
# "Coverage"); enforced where ../shared lets the integration tier run, as in CI.
COVERAGE_FLOOR ?= $(if $(wildcard ../shared/fixtures),87,0)
test: system-packages containers lint
	REQUIRE_MARIADB=1 REQUIRE_CONTAINERS=$(REQUIRE_CONTAINERS) $(CONTAINER_ENV) $(PY) -m pytest \
		--cov=onerun --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR)

clean:
	rm -rf $(VENV) demo-root .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
