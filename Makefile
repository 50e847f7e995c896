# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check -q
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-ray lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from the local CPU wheel, then the project; the constraints file pins torch so
# that no dependency pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt "$(TORCH)"
	$(PIP) install -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/marginlab reproduce lyu-li-mnist --scale cpu --out runs/lyu-li-mnist --overwrite

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The Ray backend of the sweep runner against a real local Ray instance (about a minute).
test-ray: $(STAMP)
	$(PIP) install -c constraints.txt -e ".[ray]"
	$(BIN)/python -m pytest -q tests/test_sweep_ray.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache build dist
