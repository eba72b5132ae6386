# Swabline developer commands. `make demo` and `make test` are the two in the README.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON3 ?= python3
PIP     := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test check lint format typecheck pytest chaos bench system-deps-demo system-deps-test lock clean

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

demo: system-deps-demo $(VENV)/.demo
	$(VENV)/bin/swabline demo

test: system-deps-test $(VENV)/.dev
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

chaos: system-deps-test $(VENV)/.dev
	$(VENV)/bin/pytest -m chaos -s tests/integration

bench: system-deps-test $(VENV)/.dev
	$(PY) -m bench

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock: $(VENV)/.dev
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
