# LinkSync for Close. `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint typecheck bench chaos audit lock compose-check clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]" -c requirements.lock
	@touch $(STAMP)

install: $(STAMP) ## Create the venv and install the package with dev tools

run: $(STAMP) ## Run everything locally with embedded defaults (SQLite, sandbox, demo source)
	@$(VENV)/bin/linksync dev

test: $(STAMP) ## Run the whole test suite (needs PostgreSQL, Redis and Chromium; see README)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	CHAOS_FAULT_SECONDS=8 $(VENV)/bin/pytest -n 3 --dist loadfile

test-fast: $(STAMP) ## Unit tests only (pure logic, no services)
	$(VENV)/bin/pytest -q -m unit

lint: $(STAMP) ## Ruff lint and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy on service/ and workers/
	$(VENV)/bin/mypy

bench: $(STAMP) ## Run the benchmark suite (prints a table, writes bench/results/*.json)
	$(PY) -m bench.run

chaos: $(STAMP) ## Run the chaos suite (2-minute fault windows) and the fuzzers
	CHAOS_FAULT_SECONDS=120 $(VENV)/bin/pytest tests/chaos tests/fuzz -v

audit: $(STAMP) ## Audit the locked dependencies (pip-audit); fails when nothing could be checked
	$(PY) .ci/audit.py requirements.lock

lock: $(STAMP) ## Refresh requirements.lock from the current venv
	@(echo "# Pinned versions the test suite last passed with (pip freeze); installs use it as constraints."; \
	  echo "# Refresh: make lock"; $(PIP) freeze --exclude-editable | grep -v "^-e") > requirements.lock

compose-check: ## Validate docker-compose.yml (with .env.example standing in for a missing .env)
	@if [ -f .env ]; then docker-compose config -q; \
	else cp .env.example .env && (docker-compose config -q; rc=$$?; rm -f .env; exit $$rc); fi
	@echo "docker-compose.yml is valid"

clean: ## Remove the venv and local state
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache test-artifacts
