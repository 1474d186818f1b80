# vidbench: the two commands a newcomer needs are `make demo` and `make test`; both set up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test lint demo synth leaderboard clean

setup: $(STAMP)

# torch first, from the CPU build (torch==2.13.0), so pip never resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

test: setup
	$(BIN)/ruff check vidbench tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check vidbench tests benchmarks
	$(BIN)/ruff format --check vidbench tests benchmarks

synth: setup
	$(BIN)/vidbench synth --out data/synth --seed 0

clean:
	rm -rf runs data/synth
