# make test: lint, types and the test suite; make demo: the end-to-end demonstration;
# make e2e: a real OpenStack block-storage service on loopback, tempest's migration tests and
# the project's tempest plugin, with asyncopy's manager and with Cinder's own;
# make bench: asyncopy beside its peers on every path (benchmarks/RESULTS.md).
# Both install what is missing: Debian packages and the virtualenv in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := util-linux ceph-mon ceph-osd ceph-common python3-rados python3-rbd tgt \
	qemu-utils qemu-block-extra libiscsi-dev libiscsi-bin librbd-dev librados-dev gcc time \
	cgroup-tools mariadb-server rabbitmq-server nfs-common
CODE := asyncopy devtools tests benchmarks scripts tempest_plugin

.PHONY: test lint demo e2e bench deps bytecode clean

$(BIN)/.installed: pyproject.toml setup.py asyncopy/access/_iscsi_build.py scripts/link-ceph-python asyncopy/access/_rbd_build.py tempest_plugin/pyproject.toml
	scripts/ensure-debs $(DEBS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench,e2e]'
	$(BIN)/pip install --quiet -e tempest_plugin
	scripts/link-ceph-python $(VENV)
	touch $@

deps: $(BIN)/.installed

lint: deps
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# The package's bytecode, as pip writes it when it installs a wheel: the editable install
# has none, and where PYTHONDONTWRITEBYTECODE is set every run would compile the sources.
bytecode: deps
	$(BIN)/python -m compileall -q asyncopy

demo: bytecode
	$(BIN)/python -m scripts.demo

# E2E_ARGS: e.g. --managers asyncopy, --workdir DIR (see --help)
e2e: bytecode
	$(BIN)/python -m devtools.e2e $(E2E_ARGS)

# BENCH_ARGS: e.g. --quick, --size 1G, --paths rbd-rbd,rbd-file, --layouts 50 (see --help)
bench: bytecode
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
