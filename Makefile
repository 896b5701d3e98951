# Two commands for a fresh clone: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
RUN_STAMP  := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.test-installed
PYTEST_ARGS ?=

.PHONY: run test lint typecheck clean

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
test: $(TEST_STAMP) lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check webhook tests

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
