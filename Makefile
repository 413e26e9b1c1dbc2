# Two commands on a fresh machine (python3 >= 3.10, git, make):
#   make demo   - build .venv, start the local MLflow server, run the pipeline on the demo corpus
#   make test   - build .venv with the dev extras and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MLFLOW_PORT ?= 5000
export MLFLOW_PORT
export MLFLOW_TRACKING_URI ?= http://127.0.0.1:$(MLFLOW_PORT)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-fast lint format server server-stop clean-venv bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: $(BIN)/.installed
	deepfake-audio server start
	dvc repro
	@echo
	@echo "MLflow UI:        $(MLFLOW_TRACKING_URI)  (experiment 'deepfake-audio': tuning trials are child runs)"
	@$(BIN)/python -c "import json; m=json.load(open('reports/metrics.json')); r=json.load(open('reports/registry.json')); \
	print(f\"test EER:         {m['test_eer']:.2%} (synthetic demo corpus: it exercises the pipeline, it is not a benchmark)\"); \
	b=m.get('baseline_lfcc_gmm_test_eer'); b is None or print(f\"LFCC-GMM EER:     {b:.2%} (the classic baseline, same clips)\"); \
	print(f\"registered model: {r['model_name']} version {r['version']} aliases {', '.join(r['aliases'])}\")"
	@echo "next:             dvc exp run -S tune.max_trials=6 && dvc exp show"

test: $(BIN)/.installed
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(BIN)/.installed
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

server: $(BIN)/.installed
	deepfake-audio server start

server-stop:
	deepfake-audio server stop

# Benchmark suite (~10 min on 2 quiet CPU cores): reports/benchmarks.json + a Markdown table.
# It starts its own MLflow server on a free port. e.g. make bench BENCH_ARGS="--only features --quick"
bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
