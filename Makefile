# Tickerwire: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Every Python package comes from the locks, hashes checked (see README → Dependencies).
PIP_INSTALL := $(PY) -m pip install --quiet --require-hashes --no-deps

.PHONY: demo test venv dev services bench lock

# Runtime packages only: what the demo and a production host run.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	touch $@

# Test tools on top (pytest, Playwright, Pusher's server library).
$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PIP_INSTALL) -r requirements.txt -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --omit=dev --no-audit --no-fund --silent
	touch $@

venv: $(VENV)/.installed node_modules/.installed
dev: venv $(VENV)/.dev-installed

## Set up and start the product: SQLite, in-memory layer, simulators, demo logins printed.
demo: venv
	DEBUG=1 $(PY) manage.py demo

## Services the tests need: Redis and PostgreSQL on 127.0.0.1, and Debian's Chromium.
services:
	scripts/ensure-redis
	scripts/ensure-postgres
	scripts/ensure-chromium

## Run the whole test suite (PostgreSQL, real Redis, real sockets, headless Chromium).
test: dev services
	$(PY) -m pytest

bench: venv
	$(PY) bench/fanout.py

## Re-lock after editing requirements*.in (README → Dependencies → Upgrading a package).
## pip-tools runs from its own venv so it never enters the locks it writes.
PIP_TOOLS := .venv-tools/bin/pip-compile
$(PIP_TOOLS):
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/python -m pip install --quiet pip-tools==7.6.2
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock: $(PIP_TOOLS)
	$(PIP_TOOLS) $(LOCK_FLAGS) $(UPGRADE) -o requirements.txt requirements.in
	$(PIP_TOOLS) $(LOCK_FLAGS) $(UPGRADE) -o requirements-dev.txt requirements-dev.in
