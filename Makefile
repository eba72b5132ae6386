# Swabline developer commands. `make demo` and `make test` are the two in the README.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON3 ?= python3
PIP     := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test check lint format typecheck pytest chaos bench bench-outbox system-deps-demo system-deps-test system-deps-browser lock clean

$(VENV)/bin/python:
	@$(PYTHON3) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The station and server parts only: what the demo runs.
$(VENV)/.demo: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[agent,server]'
	@touch $@

# Everything, with the test and lint tools.
$(VENV)/.dev: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	@touch $@

system-deps-demo:
	@PYTHON3=$(PYTHON3) scripts/system-deps.sh demo

system-deps-test:
	@PYTHON3=$(PYTHON3) scripts/system-deps.sh test

# Chromium for the browser tests: Debian's package (installed above), or on Ubuntu Playwright's.
system-deps-browser: $(VENV)/.dev
	@VENV_PY=$(PY) scripts/system-deps.sh browser

demo: system-deps-demo $(VENV)/.demo
	$(VENV)/bin/swabline demo

test: system-deps-test $(VENV)/.dev system-deps-browser
	$(MAKE) check
	$(MAKE) pytest

check: lint typecheck

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev
	$(VENV)/bin/pytest

# The full fault-injection suite (make test runs a reduced one); prints a tally per scenario.
chaos: system-deps-test $(VENV)/.dev
	$(VENV)/bin/pytest -m chaos tests/integration/test_chaos.py

bench: system-deps-test $(VENV)/.dev
	$(PY) -m bench

# Outbox latency, bytes per scan, drain rate and memory (see bench/bench_outbox.py).
bench-outbox: system-deps-test $(VENV)/.dev
	$(PY) -m bench.bench_outbox

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock: $(VENV)/.dev
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
