# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv (if missing), installs meguri and what it needs, then runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench clean help
.DEFAULT_GOAL := help

help:
	@echo "make demo   run the lifecycle demo on the embedded defaults (SQLite + local folder)"
	@echo "make test   lint (ruff), type-check (mypy), check layers (import-linter), run the tests"
	@echo "make bench  run the benchmarks under bench/ (installs MLflow into .venv-bench)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/meguri demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .venv-bench .mypy_cache .pytest_cache .ruff_cache meguri-demo
