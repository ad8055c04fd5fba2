# Coalition: `make run` serves the demo coalition, `make test` runs the whole suite.
# Both create the virtualenv on first use; only Python 3.11+ and make are needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
LOCK   := requirements-dev.lock
UV     := uv==0.13.9

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Every package, the dev tools included, at the version and hashes $(LOCK) pins; then the
# project itself without resolving anything, and a check that the lock has what pyproject.toml
# asks for (when not: make lock).
$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes -r $(LOCK)
	$(PIP) install --no-deps -e .
	$(BIN)/python .ci/lock_satisfies.py
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools from the lock

# uv resolves for every platform and Python >= 3.11 (markers where they differ) and keeps the
# versions already pinned unless told otherwise: `make lock ARGS=--upgrade` (or
# ARGS='--upgrade-package NAME'). Needs only the venv's Python: uv comes from PyPI, pinned.
lock: ## Re-pin requirements-dev.lock from pyproject.toml (the project and its dev tools)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(PIP) install '$(UV)'
	@# After a merge conflict in the lock: keep our side's pins; uv adds what the other side needs.
	@test ! -f $(LOCK) || sed -i '/^<<<<<<< /d; /^=======$$/,/^>>>>>>> /d' $(LOCK)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --custom-compile-command 'make lock' --quiet -o $(LOCK) $(ARGS)

run: $(STAMP) ## Migrate, load the demo if the database is empty, serve on 127.0.0.1:8000
	$(BIN)/coalition migrate
	$(BIN)/coalition demo --if-empty
	$(BIN)/coalition serve

test: $(STAMP) ## Run the whole suite (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/lint-imports
	$(BIN)/pytest

schema: $(STAMP) ## Re-export schema.graphql after a schema change
	$(BIN)/coalition export-schema schema.graphql

lint: $(STAMP) ## ruff (lint + format check), the layering contract, mypy, the bench's arithmetic (pytest bench)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:randomly bench

bench: $(STAMP) ## Run the benchmarks under bench/ (writes bench/out/)
	$(BIN)/python -m bench.earn

clean: ## Remove the virtualenv and the embedded database
	rm -rf $(VENV) .data

.PHONY: help install lock run test lint bench clean
