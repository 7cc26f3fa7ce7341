# dynmass: `make demo` (set up + quick end-to-end run), `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: install test demo bench lint clean default-model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned to the CPU build that lies on disk; an unpinned torch pulls a CUDA build of several GB
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/dynmass reproduce --quick -o $(DEMO_DIR)

# The model shipped in the package (src/dynmass/data/default_model.h5): CNN2D trained by the full
# reproduction on the embedded universe (same seeds as `dynmass reproduce`), bundled with its
# held-out calibration; --coverage checks the intervals and writes the coverage figure.
MODEL_DIR ?= build/default-model
default-model: $(STAMP)
	$(BIN)/dynmass reproduce -o $(MODEL_DIR) --models cnn2d
	$(BIN)/dynmass bundle $(MODEL_DIR)/runs/cnn2d -o src/dynmass/data/default_model.h5 --coverage

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
