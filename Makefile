# Coalition: `make run` serves the demo coalition, `make test` runs the whole suite.
# Both create the virtualenv on first use; only Python 3.11+ and make are needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
LOCK   := requirements-dev.lock
# The container image's packages (docker/Dockerfile): the project's dependencies, no extra,
# at the versions $(LOCK) pins (make lock writes both; make lint checks they agree).
RUNTIME_LOCK := requirements.lock
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
lock: ## Re-pin requirements-dev.lock (the project and its dev tools) and requirements.lock (the image's)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(PIP) install '$(UV)'
	@# After a merge conflict in a lock: keep our side's pins; uv adds what the other side needs.
	@for f in $(LOCK) $(RUNTIME_LOCK); do \
	  test ! -f $$f || sed -i '/^<<<<<<< /d; /^=======$$/,/^>>>>>>> /d' $$f; done
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --custom-compile-command 'make lock' --quiet -o $(LOCK) $(ARGS)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	  --generate-hashes --custom-compile-command 'make lock' --quiet \
	  --constraint $(LOCK) -o $(RUNTIME_LOCK)

run: $(STAMP) ## Migrate, load the demo if the database is empty, serve on 127.0.0.1:8000
	$(BIN)/coalition migrate
	$(BIN)/coalition demo --if-empty
	$(BIN)/coalition serve

test: $(STAMP) ## Run the whole suite (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/lint-imports
	$(BIN)/pytest

schema: $(STAMP) ## Re-export schema.graphql after a schema change
	$(BIN)/coalition export-schema schema.graphql

lint: $(STAMP) ## ruff, the layering contract, mypy, docker/ (hadolint, compose schema), the locks, the bench's arithmetic
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold style docker/Dockerfile
	$(BIN)/python .ci/check_compose.py
	$(BIN)/python .ci/runtime_lock.py
	$(BIN)/pytest -q -p no:randomly bench

bench: $(STAMP) ## Run the benchmarks under bench/ (writes bench/out/)
	$(BIN)/python -m bench.earn

clean: ## Remove the virtualenv and the embedded database
	rm -rf $(VENV) .data

.PHONY: help install lock run test lint bench clean
