# Two commands for a newcomer (see README): `make main` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup main test bench experiment

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# The main job, end to end on the real data in ../shared/data (override: DATA=/path/to/ml-latest-small).
main: setup
	$(BIN)/twin-tf main $(if $(DATA),--data=$(DATA))

# The test suite as CI runs it (slow full-size end-to-end tests deselected).
test: setup
	$(BIN)/python -m pytest -m "not slow" -q

# Benchmarks that print figures (the serving one needs the run `make main` trains).
bench: setup
	$(BIN)/python bench/clustering.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/train_throughput.py
	test -d work_dir/runs/TwinV2-seed0 || $(BIN)/twin-tf main $(if $(DATA),--data=$(DATA))
	$(BIN)/python bench/serving.py --run-dir work_dir/runs/TwinV2-seed0

# The quality experiment: TwinV2, Twin, SimHard, DIN and two ablations x 3 seeds on the examples
# the main job built -> results/quality.json and results/quality.md (about 45 min on 2 cores).
experiment: setup
	test -d work_dir/examples || $(BIN)/twin-tf main $(if $(DATA),--data=$(DATA))
	$(BIN)/twin-tf experiment --examples work_dir/examples --out results
