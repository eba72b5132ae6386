# Swabline developer commands. `make demo` and `make test` are the two in the README.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON3 ?= python3

.PHONY: demo test check lint format typecheck pytest chaos bench bench-outbox venv system-deps-demo system-deps-test lock clean

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON3) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

system-deps-demo:
	@scripts/system-deps.sh demo

system-deps-test:
	@scripts/system-deps.sh test

demo: system-deps-demo venv
	$(VENV)/bin/swabline demo

test: system-deps-test venv check pytest

check: lint typecheck

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest -m "not chaos"

# The full fault-injection suite (make test runs a reduced one); prints a tally per scenario.
chaos: system-deps-test venv
	$(VENV)/bin/pytest -m chaos tests/integration/test_chaos.py

bench: system-deps-test venv
	$(PY) -m bench

# Outbox latency, bytes per scan, drain rate and memory (see bench/bench_outbox.py).
bench-outbox: system-deps-test venv
	$(PY) -m bench.bench_outbox

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock: venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
