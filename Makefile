# Two entry points for a fresh machine (Debian/Ubuntu, root): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_APT_PACKAGES := python3-venv
APT_PACKAGES := $(DEMO_APT_PACKAGES) mariadb-server mariadb-client openssh-client

.PHONY: demo test lint system-packages demo-packages venv clean

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

demo: demo-packages $(VENV)/.runtime
	$(PY) demo/run_demo.py

lint: venv
	$(VENV)/bin/ruff check onerun tests ci bench demo
	$(VENV)/bin/mypy

# REQUIRE_MARIADB=1: the tests against a real MariaDB must run, never skip.
test: system-packages venv lint
	REQUIRE_MARIADB=1 $(PY) -m pytest

clean:
	rm -rf $(VENV) demo-root .pytest_cache .mypy_cache .ruff_cache
