# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv (if missing), installs meguri and what it needs, then runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench bench-venv bench-data bench-serve bench-monitor clean help
.DEFAULT_GOAL := help

help:
	@echo "make demo   run the lifecycle demo on the embedded defaults (SQLite + local folder)"
	@echo "make test   lint (ruff), type-check (mypy), check layers (import-linter), run the tests"
	@echo "make bench  run the benchmarks under bench/ (tracking vs MLflow, data vs pandas, tuning vs Optuna, training vs bare libraries, serving vs mlflow/BentoML/FastAPI, drift vs Evidently)"
	@echo "make bench-data  only the data-preparation benchmark (meguri vs pandas)"
	@echo "make bench-serve  only the inference-server benchmark (meguri vs mlflow/BentoML/FastAPI; needs wrk)"
	@echo "make bench-monitor  only the drift benchmark (meguri vs Evidently, 10k to 1M rows)"

# constraints.txt pins the versions the suite was last run with (pip freeze of a working
# .venv): installs are reproducible and pip never backtracks through boto3/botocore releases.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -c constraints.txt
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

# The benchmarks run in their own venv so that MLflow's pins never touch .venv.
# Pass options with BENCH_ARGS, e.g. `make bench BENCH_ARGS=--quick` (every script takes
# --quick but bench/monitor.py, which `make bench` runs at its default sizes).
bench: bench-venv
	.venv-bench/bin/python bench/tracking.py $(BENCH_ARGS)
	.venv-bench/bin/python bench/data.py $(BENCH_ARGS)
	.venv-bench/bin/python bench/tune.py $(BENCH_ARGS)
	.venv-bench/bin/python bench/train_overhead.py $(BENCH_ARGS)
	.venv-bench/bin/python bench/serve.py $(BENCH_ARGS)
	.venv-bench/bin/python bench/monitor.py

bench-venv:
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	@test .venv-bench/.installed -nt pyproject.toml || { \
	  .venv-bench/bin/python -m pip install -q --upgrade pip && \
	  .venv-bench/bin/python -m pip install -q -e '.[bench]' && \
	  .venv-bench/bin/python -m pip install -q --no-deps --target .venv-bench/pandas2 \
	    'pandas>=2.2,<3' pytz && touch .venv-bench/.installed; }

# meguri's drift check against Evidently's DataDriftPreset and plain numpy/scipy (10k, 100k and
# 1M rows a side; Evidently takes about 2 minutes at 1M; BENCH_ARGS="--rows 100000" is quicker).
bench-monitor: bench-venv
	.venv-bench/bin/python bench/monitor.py $(BENCH_ARGS)

# meguri's data preparation against pandas (5M rows; 2.5-5 minutes on 2 cores, --quick ~20 s).
bench-data: bench-venv
	.venv-bench/bin/python bench/data.py $(BENCH_ARGS)

# The inference server against mlflow serve, BentoML and FastAPI (wrk from Debian; ~5 min, --quick ~2).
bench-serve: bench-venv
	.venv-bench/bin/python bench/serve.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-bench .mypy_cache .pytest_cache .ruff_cache meguri-demo
