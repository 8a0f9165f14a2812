# Two commands for a newcomer (see README): `make main` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup main test bench experiment longterm bazel

setup: $(VENV)/.installed

# constraints.txt: the versions the committed figures were measured with
$(VENV)/.installed: setup.cfg pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
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
	$(BIN)/python bench/gsu_pruning.py
	$(BIN)/python bench/train_throughput.py
	test -d work_dir/runs/TwinV2-seed0 || $(BIN)/twin-tf main $(if $(DATA),--data=$(DATA))
	$(BIN)/python bench/serving.py --run-dir work_dir/runs/TwinV2-seed0

# The quality study: every model tuned on one grid and trained over 3 seeds beside a GBDT, then
# TWIN-V2 against TWIN at equal sequence budgets, the completion groups M and the clustering
# method, on the main job's work folder -> results/quality.json, quality.md, quality_report/.
# About 25 minutes on 2 cores at the defaults (3 seeds, one epoch a run), which is what
# results/ holds; see docs/results.md.
experiment: setup
	test -d work_dir/examples || $(BIN)/twin-tf main $(if $(DATA),--data=$(DATA))
	$(BIN)/twin-tf experiment --workdir work_dir --out results $(EXPERIMENT_FLAGS)

# The SYNTHETIC long-term study (results/longterm.json) at its defaults; see
# docs/live_attention.md for its time on 2 cores.
longterm: setup
	$(BIN)/twin-tf longterm-study --out results

# BUILD under a real Bazel, offline: query, build, and the fast test targets (bazel/check.sh;
# installs Debian's bazel-bootstrap if bazel is missing). BAZEL_TESTS="//..." runs them all.
bazel: setup
	PATH="$(abspath $(BIN)):$$PATH" bazel/check.sh
