# Two commands on a fresh clone: `make run` (the main study, ends in a report) and `make test`.
# Both create .venv on first use and install what they need (the test oracles and Ray,
# so the Ray executor's tests run, not skip).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data root: GRADAUDIT_DATA if set, else ../shared/data when it exists, else ./data.
GRADAUDIT_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export GRADAUDIT_DATA
# OpenMP threads sleep when idle instead of spinning (much faster on a shared CPU).
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	touch $@

run: $(VENV)/.installed
	$(BIN)/gradaudit run --out runs/main

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs
