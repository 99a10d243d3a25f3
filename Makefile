# The front door: `make install` sets up .venv, `make run` starts the dashboard, `make test` runs every test. Each sets up what it needs
# first (a venv in .venv, the requirements installed once; again only when a requirements file changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test

install: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(BIN)/streamlit run dashboard/app.py

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@
