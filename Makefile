# Swabline developer commands. `make demo` and `make test` are the two in the README.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON3 ?= python3

.PHONY: demo test check lint format typecheck pytest chaos bench venv system-deps-demo system-deps-test lock clean

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

chaos: system-deps-test venv
	$(VENV)/bin/pytest -m chaos -s tests/integration

bench: system-deps-test venv
	$(PY) -m bench

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock: venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
