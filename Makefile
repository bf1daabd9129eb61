# Everyday commands. `make help` lists them. Everything runs inside .venv at the repository root.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup demo test lint typecheck unit integration chaos-ci chaos bench clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its dev tools

demo: setup  ## run the whole path locally: broker, sandbox, sample events, worker, result table
	$(BIN)/inmobi-sync demo

lint: setup  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup  ## mypy strict on worker/
	$(BIN)/mypy

unit: setup  ## unit tests of the pure core and adapters (no broker)
	$(BIN)/pytest -q tests/unit

integration: setup  ## integration tests (embedded broker, sandbox over HTTP, worker processes)
	$(BIN)/pytest -q -m integration tests/integration

chaos-ci: setup  ## the chaos suite's CI tier (part of `make test`)
	$(BIN)/pytest -q -m chaos tests/chaos

test: setup lint typecheck  ## lint, type checks and every test (what CI runs)
	$(BIN)/pytest -q

chaos: setup  ## the chaos suite, full tier (crashes, bounces, pauses, faults, poison records); prints a table
	$(BIN)/python -m tests.chaos --tier full

bench: setup  ## run the benchmark suite (see bench/README.md; ~2 min with --quick)
	$(BIN)/python -m bench.run --quick

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
