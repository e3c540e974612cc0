# nrr-worker task runner. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.DEFAULT_GOAL := help

.PHONY: help demo test lint typecheck migrations-check pytest bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) ## Run the whole pipeline on a bundled demo Stripe account (SQLite, no servers)
	$(BIN)/nrr demo

test: $(STAMP) lint typecheck migrations-check pytest ## Run the whole test suite (lint, types, migrations, pytest)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check nrr models integrations worker tests benchmarks

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

migrations-check: $(STAMP) ## alembic upgrade head + alembic check on a scratch SQLite database
	rm -f /tmp/nrr-alembic-check.db
	DATABASE_URL=sqlite:////tmp/nrr-alembic-check.db $(BIN)/alembic -c models/alembic.ini upgrade head
	DATABASE_URL=sqlite:////tmp/nrr-alembic-check.db $(BIN)/alembic -c models/alembic.ini check

pytest: $(STAMP) ## pytest (SQLite and a PostgreSQL server started by the tests, real Redis)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP) ## Benchmarks (figures go in the README)
	$(BIN)/python benchmarks/bench_recompute.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_sync.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
