# Two commands for a fresh clone: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
RUN_STAMP  := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.test-installed
PYTEST_ARGS ?=

.PHONY: run test lint typecheck bench tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install --quiet -c requirements.lock -e .
	touch $@

$(TEST_STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install --quiet -c requirements.lock -e '.[test]'
	touch $@ $(RUN_STAMP)

## Serve the webhook on https://localhost:8443 with the embedded default policy.
run: $(RUN_STAMP)
	$(BIN)/webhook serve

## Install everything, lint, type-check and run the whole test suite.
test: $(TEST_STAMP) tools lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Debian tools the tests and the benchmark drive (wrk); installed when missing.
tools:
	@command -v wrk >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "wrk is missing: run 'sudo apt-get install wrk'" >&2; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

## The benchmark (about 9 minutes): our server against the framework floor, over TLS.
bench: $(TEST_STAMP) tools
	$(BIN)/python bench/run.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check webhook tests bench

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
