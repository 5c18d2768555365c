# Two entry points: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration bench bench-transport chaos soak dev-up dev-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The example order system, run from this checkout (the example is not in the wheel).
demo: $(STAMP)
	$(BIN)/python -m services.demo

test: lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n 3 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Floor, ours and peers side by side, with CPU per saga by process; writes
# bench-results/results.json and .png (options: python -m tests.benchmarks.compare --help).
bench: $(BENCH_STAMP)
	$(BIN)/python -m tests.benchmarks.compare

# 10,000 order sagas while processes are killed; exit 1 on any lost or doubled effect.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run

# Steady load for 10 minutes: every process's RSS at the start and the end, and what
# history costs (CPU per saga, database size, rows); e.g. SOAK="--retention-minutes 2".
soak: $(STAMP)
	$(BIN)/python -m tests.benchmarks.soak $(SOAK)

bench-transport: $(STAMP)
	$(BIN)/python -m tests.benchmarks.transport

dev-up: $(STAMP)
	$(BIN)/saga dev up

dev-down: $(STAMP)
	$(BIN)/saga dev down

clean:
	rm -rf $(VENV) .saga .mypy_cache .ruff_cache
