# Tickerwire: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv services bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

venv: $(VENV)/.installed node_modules/.installed

## Set up and start the product: SQLite, in-memory layer, simulators, demo logins printed.
demo: venv
	DEBUG=1 $(PY) manage.py demo

## Services the tests need: a Redis server on 127.0.0.1:6379 and Debian's Chromium.
services:
	scripts/ensure-redis
	scripts/ensure-chromium

## Run the whole test suite (real Redis, real sockets, headless Chromium).
test: venv services
	$(PY) -m pytest

bench: venv
	$(PY) bench/fanout.py
