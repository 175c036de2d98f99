# geostream: every set-up step lives here, so a fresh machine needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GEOSTREAM := $(BIN)/geostream
STAMP := $(VENV)/.installed

.PHONY: install run test fuzz lint bench stack-up stack-down stack-status clean

install: $(STAMP)

# The C extensions (processors/*.c) are built by the install: a change to one reinstalls.
$(STAMP): pyproject.toml setup.py $(wildcard processors/*.c)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "geostream needs Python 3.11"; exit 1; }
	@# processors/*.c are built by the install: a C compiler and Python's headers
	$(PYTHON) -c 'import os, shutil, sys, sysconfig; sys.exit(not (shutil.which("gcc") and \
		os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))))' || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends gcc libc6-dev python3-dev; } || \
		{ echo "geostream builds C extensions: install gcc and Python 3.11's headers"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

stack-up: install
	$(GEOSTREAM) stack up

stack-down: install
	$(GEOSTREAM) stack down

stack-status: install
	$(GEOSTREAM) stack status

## The pipeline end to end on the local stack: gateway, worker, sink and API, supervised, with
## simulated couriers posting to the gateway. Ctrl-C stops it; `make stack-down` stops the stack.
COURIERS ?= 300
run: stack-up
	$(GEOSTREAM) serve --simulate $(COURIERS)

## Lint, then the whole test suite against the real local stack (brought up first).
test: stack-up lint
	$(BIN)/pytest

# 100,000 generated requests against the real gateway and API; prints the tally
fuzz: stack-up
	GEOSTREAM_FUZZ_CASES=100000 $(BIN)/pytest -q -s tests/test_fuzz.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: stack-up
	$(GEOSTREAM) bench

clean:
	-$(GEOSTREAM) stack down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
