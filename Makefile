# The two commands of the README:
#   make sandbox   the main job: sandbox up, CRD installed, the example EdgeModel applied
#   make test      lint + every test (what .ci/run runs)
# Everything is installed from the project's own files: a virtualenv from pyproject.toml,
# Prometheus from Debian's packages, the control plane built from the Go module proxy
# into the user cache (only the first run pays for that).
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: sandbox test lint deps system-deps tools down bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

deps: $(STAMP)

system-deps:
	@bash sandbox/install-system-deps.sh

tools: deps system-deps
	@$(BIN)/python -m edgemodel_sandbox.tools >/dev/null

sandbox: tools
	$(BIN)/edgemodel sandbox demo

down: deps
	$(BIN)/edgemodel sandbox down

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint tools
	$(BIN)/pytest
