# Every target is self-contained on a fresh clone with only Python >= 3.11 installed:
# the venv is created and the project installed into it on first use.
# The first Python >= 3.11 on PATH (python3 may be older where python3.12 exists).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo $$p && break; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test soak bench lint clean bytecode bytecode

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "flowerd needs Python >= 3.11 on PATH (python3, python3.11, ...)" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Bytecode for daemon/ (an editable install has none): where PYTHONDONTWRITEBYTECODE is
# set, every flowerd process -- each CLI command, each daemon a test starts -- compiled
# every module it imports anew (~0.3 s CPU of a 1 s `flowerd runs`). Quick when current.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q daemon migrations

run: bytecode
	$(BIN)/flowerd --base-dir . serve

test: bytecode
	$(BIN)/ruff check --no-cache daemon tests benchmarks migrations pipelines
	$(BIN)/python -m pytest -q -n 4

# the long trials: every @pytest.mark.slow test, and the sized-up versions of the others
soak: bytecode
	FLOWERD_SOAK=1 $(BIN)/python -m pytest -q -m 'slow or not slow'

bench: bytecode
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check --fix daemon tests benchmarks migrations pipelines
	$(BIN)/ruff format daemon tests benchmarks migrations pipelines

clean:
	rm -rf $(VENV) .flowerd .pytest_cache .ruff_cache
