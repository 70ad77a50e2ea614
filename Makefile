# Two entry points do all set-up on a fresh machine:
#   make demo   - build .venv, install the pinned environment, run the workflow on the demo cohort
#   make test   - same set-up, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
# logs, reports and READMEs are UTF-8 whatever the machine's locale (a C/POSIX locale means ASCII)
export PYTHONUTF8 := 1
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

# two pytest workers, one test file each at a time (module fixtures stay in one worker): most tests
# are single-threaded, so this uses both cores of a small machine
test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -ra -n 2 --dist loadfile --durations=15 tests

bench: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/preprocess.py

clean:
	rm -rf results .snakemake
