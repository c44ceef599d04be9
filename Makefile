# Two entry points for a fresh machine (Debian/Ubuntu, root): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := mariadb-server mariadb-client openssh-client

.PHONY: demo test lint system-packages venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Only what the tests need from Debian: a MariaDB server they start privately, ssh-keygen.
system-packages:
	@if ! command -v mariadbd >/dev/null || ! command -v ssh-keygen >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; fi

demo: venv
	$(PY) demo/run_demo.py

lint: venv
	$(VENV)/bin/ruff check onerun tests ci bench demo
	$(VENV)/bin/mypy

test: system-packages venv lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo-root .pytest_cache .mypy_cache .ruff_cache
