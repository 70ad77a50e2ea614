# Two entry points do all set-up on a fresh machine:
#   make demo   - build .venv, install the pinned environment, run the workflow on the demo cohort
#   make test   - same set-up, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.voxflow-installed

.PHONY: setup demo test bench clean

$(STAMP): envs/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r envs/requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)
	@PATH="$(abspath $(BIN)):$$PATH" $(BIN)/voxflow where --configfile config/config.yaml

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -ra tests

bench: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/preprocess.py

clean:
	rm -rf results .snakemake
