# make test: lint, types and the test suite; make demo: the end-to-end demonstration.
# Both install what is missing: Debian packages and the virtualenv in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := util-linux
CODE := asyncopy tests benchmarks scripts

.PHONY: test lint demo bench-core deps clean

$(BIN)/.installed: pyproject.toml
	scripts/ensure-debs $(DEBS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

deps: $(BIN)/.installed

lint: deps
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

demo: deps
	$(BIN)/python scripts/demo.py

bench-core: deps
	scripts/ensure-debs time
	$(BIN)/python benchmarks/file_to_device.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
