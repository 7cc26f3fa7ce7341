# dynmass: `make demo` (set up + quick end-to-end run), `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
# The exact versions the test suite was last verified with (`make lock` refreshes them).
CONSTRAINTS := constraints.txt
# torch pinned to the CPU build that lies on disk; an unpinned torch pulls a CUDA build of several GB
TORCH := torch==2.13.0

.PHONY: install test test-fast demo bench lint lock calibrate-bounds clean default-model

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Every Examples section of the package runs as a doctest with the suite.
DOCTESTS := src/dynmass

# The whole suite, with the 15 slowest tests listed.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q --durations=15 --doctest-modules tests $(DOCTESTS)

# For development: skips the tests marked slow (model training, universe builds).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=15 --doctest-modules tests $(DOCTESTS)

# Refresh constraints.txt deliberately: newest releases allowed by pyproject.toml, installed in
# a scratch venv; then run `make test` (and `make calibrate-bounds` if numbers moved) and commit.
LOCK_VENV := build/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[test]"
	{ echo "# Verified versions for 'make install' (python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())')); refresh with 'make lock'."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -e 's/+cpu$$//'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

# Spread over seeds of every stochastic test statistic (tests/bounds/summary.md, bounds.png).
calibrate-bounds: $(STAMP)
	$(BIN)/python tests/calibrate_bounds.py

demo: $(STAMP)
	$(BIN)/dynmass reproduce --quick -o $(DEMO_DIR)

# The model shipped in the package (src/dynmass/data/default_model.h5): CNN2D trained by the full
# reproduction on the embedded universe (same seeds as `dynmass reproduce`), bundled with its
# held-out calibration; --coverage checks the intervals and writes the coverage figure.
# The shipped default model (src/dynmass/data/default_model.h5): CNN2D trained with 10 folds on
# the mock universe of seed 100 (hosts from M200c = 2e13 Msun/h), its intervals calibrated on
# the fold ensemble's predictions of three independent universes and their coverage tested on
# two more (hosts from 1e13 Msun/h: real skies hold groups below the training range too).
# Every universe is a 1 Gpc/h box (MDPL2's volume), views flat in log M.
# About 18 min on 2 cores (measured); rerunning resumes from the files already made.
MODEL_DIR ?= build/default-model
MODEL_BOX ?= 1000
MODEL_CAL_SEEDS ?= 101 102 104
MODEL_TEST_SEEDS ?= 103 105
MODEL_MIN_MASS = 1e13
$(MODEL_DIR)/obs_100.h5: MODEL_MIN_MASS = 2e13
MODEL_OUT = src/dynmass/data/default_model.h5

$(MODEL_DIR)/universe_%.h5: | $(STAMP)
	$(BIN)/dynmass universe --box $(MODEL_BOX) --seed $* -o $@

$(MODEL_DIR)/obs_%.h5: $(MODEL_DIR)/universe_%.h5
	$(BIN)/dynmass observe $< -o $@ --flat-mass-function --min-mass $(MODEL_MIN_MASS) --seed $*

$(MODEL_DIR)/runs/cnn2d/predictions.csv: $(MODEL_DIR)/obs_100.h5
	$(BIN)/dynmass train $< --model cnn2d --folds 10 --seed 100 -o $(MODEL_DIR)/runs/cnn2d --no-progress

default-model: $(MODEL_DIR)/runs/cnn2d/predictions.csv \
		$(foreach s,$(MODEL_CAL_SEEDS) $(MODEL_TEST_SEEDS),$(MODEL_DIR)/obs_$(s).h5)
	$(BIN)/dynmass bundle $(MODEL_DIR)/runs/cnn2d -o $(MODEL_OUT) --coverage \
		--calibrate-on $(foreach s,$(MODEL_CAL_SEEDS),$(MODEL_DIR)/obs_$(s).h5) \
		--test-on $(foreach s,$(MODEL_TEST_SEEDS),$(MODEL_DIR)/obs_$(s).h5)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache $(LOCK_VENV)
