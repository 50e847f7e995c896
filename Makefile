# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check -q
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-slow test-ray lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from the local CPU wheel, then the project; the constraints file pins torch so
# that no dependency pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt "$(TORCH)"
	$(PIP) install -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The tests also install the optional back ends (Ray, Lightning, TensorBoard), so that every
# change is tested against them.
$(TEST_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e ".[test,ray,lightning,tensorboard]"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/marginlab reproduce lyu-li-mnist --scale cpu --out runs/lyu-li-mnist --overwrite

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m slow

# All of the Ray backend's tests against a real local Ray instance, the slow ones included
# (`make test` runs the short ones).
test-ray: $(TEST_STAMP)
	$(BIN)/python -m pytest -q tests/sweep/test_ray.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache build dist
