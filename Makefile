# Coalition: `make run` serves the demo coalition, `make test` runs the whole suite.
# Both create the virtualenv on first use; only Python 3.11+ and make are needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

run: $(STAMP) ## Migrate, load the demo if the database is empty, serve on 127.0.0.1:8000
	$(BIN)/coalition migrate
	$(BIN)/coalition demo --if-empty
	$(BIN)/coalition serve

test: $(STAMP) ## Run the whole suite (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/lint-imports
	$(BIN)/pytest

schema: $(STAMP) ## Re-export schema.graphql after a schema change
	$(BIN)/coalition export-schema schema.graphql

lint: $(STAMP) ## ruff (lint + format check), the layering contract, the bench's arithmetic (pytest bench)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q bench

bench: $(STAMP) ## Run the benchmarks under bench/ (writes bench/out/)
	$(BIN)/python -m bench.earn

clean: ## Remove the virtualenv and the embedded database
	rm -rf $(VENV) .data

.PHONY: help install run test lint bench clean
