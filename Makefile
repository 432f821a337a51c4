# The two set-up commands of the README are `make demo` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LINT_PATHS := src tests examples bench soak

.PHONY: demo test lint unit integration bench soak clean kafka-stop

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
	# two workers, a module each at a time (its module-scoped brokers stay on one): the fault tests mostly wait
	# on brokers, sessions and timeouts, so the suite takes about 60% of its serial time on two cores
	$(BIN)/pytest -n 2 --dist loadfile

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
	$(BIN)/python -m bench.queues

# not part of `make test`: SOAK_S sets its length (600 s), SOAK_SEED repeats a run; see soak/__init__.py
soak: $(STAMP)
	$(BIN)/python -m soak

kafka-stop: $(STAMP)
	$(BIN)/streamcar kafka stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
