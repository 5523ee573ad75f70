# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgresql,redis]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m accesspoint.demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	bash scripts/ensure-system-packages.sh
	# Tests start many child processes; with PYTHONDONTWRITEBYTECODE set each would compile the sources again.
	$(BIN)/python -m compileall -q accesspoint pmode smp far operators >/dev/null
	$(BIN)/pytest

test: lint typecheck unit

# Coverage-guided fuzzing (tests/fuzz/README.md), never part of `make test` (a short smoke run of each target is).
# One target after another, niced: FUZZ_RUNS executions each, or FUZZ_TIME seconds each when set (0: no limit).
FUZZ_STAMP   := $(VENV)/.fuzz-installed
FUZZ_RUNS    ?= 1000000
FUZZ_TIME    ?= 0
FUZZ_TARGETS ?=
FUZZ_NICE    ?= 19

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,postgresql,redis,fuzz]'
	touch $@

fuzz: $(FUZZ_STAMP)
	nice -n $(FUZZ_NICE) $(BIN)/python -m tests.fuzz.run --runs $(FUZZ_RUNS) --max-time $(FUZZ_TIME) $(FUZZ_TARGETS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
