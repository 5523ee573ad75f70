# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench fuzz mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgresql,redis,otel]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m accesspoint.demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite runs on PYTEST_WORKERS pytest-xdist workers (0: in this one process). Many tests wait on servers and
# child processes, so more workers than cores keep the CPU busy. Each module's tests (and the shared federation's)
# stay on one worker, which builds their module-scoped fixtures once; modules go out in collection order, where
# tests/conftest.py puts the slow ones first (xdist's default reorder would put the many-test modules first).
PYTEST_WORKERS ?= 3
PYTEST_DIST    ?= loadfile
ifeq ($(PYTEST_WORKERS),0)
PYTEST_PARALLEL :=
else
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) --no-loadscope-reorder
endif

unit: $(STAMP)
	bash scripts/ensure-system-packages.sh
	# Tests start many child processes; with PYTHONDONTWRITEBYTECODE set each would compile the sources again.
	$(BIN)/python -m compileall -q accesspoint pmode smp far operators >/dev/null
	$(BIN)/pytest $(PYTEST_PARALLEL)

# mypy on a clean clone's cold cache takes ~30 s of CPU: it runs beside the suite (-j2), whose first minutes are
# in-process tests that keep one core busy, instead of before it. Both always run; either failing fails the target.
test: lint
	$(MAKE) --no-print-directory -j2 typecheck unit

# Coverage-guided fuzzing (tests/fuzz/README.md), never part of `make test` (a short smoke run of each target is).
# One target after another, niced: FUZZ_RUNS executions each, or FUZZ_TIME seconds each when set (0: no limit).
FUZZ_STAMP   := $(VENV)/.fuzz-installed
FUZZ_RUNS    ?= 1000000
FUZZ_TIME    ?= 0
FUZZ_TARGETS ?=
FUZZ_NICE    ?= 19

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,postgresql,redis,otel,fuzz]'
	touch $@

fuzz: $(FUZZ_STAMP)
	nice -n $(FUZZ_NICE) $(BIN)/python -m tests.fuzz.run --runs $(FUZZ_RUNS) --max-time $(FUZZ_TIME) $(FUZZ_TARGETS)

bench: $(STAMP)
	$(BIN)/python -m bench

# Mutation check of accesspoint/security (README: Mutation check), not part of `make test`: CPU heavy, so niced.
# Only the functions that decide whether a message or receipt is accepted are mutated ([tool.mutmut] in
# pyproject.toml names the files and the fast security tests that run against each mutant).
SEC := accesspoint.security
MUTANTS ?= \
	'$(SEC).signing.x_verify_signature*' '$(SEC).signing.x__verify_reference*' '$(SEC).signing.x_verify_bytes*' \
	'$(SEC).signing.x_find_signature*' '$(SEC).signing.x_coverage_gaps*' '$(SEC).signing.x__check_reference_algorithms*' \
	'$(SEC).signing.x__fail*' '$(SEC).signing.x_resolve_token*' '$(SEC).signing.xǁVerifiedSignatureǁcovers*' \
	'$(SEC).encryption.x_decrypt_stream*' '$(SEC).encryption.x__unwrap_rsa*' '$(SEC).encryption.x__unwrap_agreed*' \
	'$(SEC).encryption.x__unwrap_checked*' '$(SEC).encryption.x_decrypt_attachments*' '$(SEC).encryption.x__targets*' \
	'$(SEC).encryption.x__encrypted_key_for*' '$(SEC).encryption.x__failed*' '$(SEC).encryption.xǁ_Plaintextǁ*' \
	'$(SEC).encryption.x__resolve_recipient*' \
	'$(SEC).signing.x__unb64*' '$(SEC).signing.xǁTokenCacheǁread*' '$(SEC).encryption.x__unb64*' \
	'$(SEC).inbound.x_open_message*' '$(SEC).inbound.x_verify_parts*' '$(SEC).inbound.x_validate_signer*' \
	'$(SEC).inbound.xǁTrustCacheǁvalidate*' \
	'$(SEC).receipts.x_verify_receipt*' \
	'$(SEC).trust.x_validate_certificate*' '$(SEC).trust.xǁ_PathSearchǁextend*' '$(SEC).trust.x__issuer_problem*' \
	'$(SEC).trust.x__validity*' '$(SEC).trust.x__key_usage*' '$(SEC).trust.x__party_binding*' \
	'$(SEC).tokens.x_resolve_token_reference*' '$(SEC).tokens.x_read_binary_security_token*'
MUTATION_CHILDREN ?= 2

mutation: $(STAMP)
	nice -n 19 $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(BIN)/python scripts/mutation_report.py $(MUTANTS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info mutants
