# Two commands set everything up on a fresh Debian machine with Python 3.11 and make:
#   make demo   - the app with demo data on the embedded default (SQLite + in-process queue)
#   make test   - the whole test suite on every core (on PostgreSQL + Redis too when DSR_TEST_* are set, see .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PORT ?= 5000

.PHONY: demo test lint typecheck check system-deps clean help bench

help:
	@echo "make demo | make test | make lint | make typecheck | make check | make bench | make clean"

# System libraries: Python's venv module, and Pango, HarfBuzz-subset and a font for WeasyPrint (PDF reports).
system-deps:
	@missing=""; \
	$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so' || missing="$$missing libpango-1.0-0 libpangoft2-1.0-0"; \
	ldconfig -p 2>/dev/null | grep -q 'libharfbuzz-subset.so' || missing="$$missing libharfbuzz-subset0"; \
	test -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || missing="$$missing fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (install them: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

demo: $(STAMP)
	PORT=$(PORT) $(BIN)/dsr --log-level WARNING demo

# The suite runs on every core (pytest-xdist); loadgroup keeps a module marked xdist_group on one worker.
# Serially, in this one process (pdb, print debugging): make test PYTEST_ARGS="-n 0 tests/unit/test_child.py"
PYTEST_XDIST ?= -n auto --dist loadgroup

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# Benchmarks against the real PostgreSQL and Redis on loopback (not part of make test); appends to
# bench/RESULTS.md. BENCH_ARGS=--quick for the small sizes only.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
