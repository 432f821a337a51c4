# The two set-up commands of the README are `make demo` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LINT_PATHS := src tests examples bench

.PHONY: demo test lint unit integration bench clean kafka-stop

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	scripts/ensure-test-tools.sh
	$(BIN)/streamcar kafka fetch
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	# serial: on two workers (pytest -n 2 --dist loadfile, about 60% of the time) free-port races between the
	# workers' brokers and a loaded coordinator still fail a test now and then
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.pacing
	$(BIN)/python -m bench.queue

kafka-stop: $(STAMP)
	$(BIN)/streamcar kafka stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
