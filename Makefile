# The front door: `make install` sets up .venv, `make run` starts the dashboard, `make test` runs every test
# (`make test-fast`: the unit tests alone, under a minute). Each sets up what it needs
# first (a venv in .venv, the requirements installed once; again only when a requirements file changes).
# install and test add requirements-cluster.txt (Ray Tune, for `sweep --executor ray` and its tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast

install: $(VENV)/.installed-test $(VENV)/.installed-cluster

run: $(VENV)/.installed
	$(BIN)/streamlit run dashboard/app.py

# Every test, the fast lane first (unit tests, stops at the first failure), then the slow lane (real workers,
# subprocesses, Streamlit servers, Chromium).
test: $(VENV)/.installed-test $(VENV)/.installed-cluster
	$(BIN)/python -m pytest -q -x -m "not slow and not browser"
	$(BIN)/python -m pytest -q -m "slow or browser"

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow and not browser"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

$(VENV)/.installed-cluster: requirements-cluster.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-cluster.txt
	touch $@
