# Two commands on a fresh machine (python3.11 on linux x86_64, as the lock; git, make):
#   make demo   - build .venv, start the local MLflow server, run the pipeline on the demo corpus
#   make test   - build .venv with the dev extras and run the whole test suite
# `make` alone lists every target.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The exact versions tested: pyproject.toml's dependencies, dev, whisper and whisper-base extras,
# by pip-compile for CPython 3.11 on linux x86_64. .venv (so demo, test and CI) installs these
# and nothing else.
LOCK := requirements.lock
# `make lock` resolves in a throwaway venv of this Python with these tools (pinned: a relock
# of an unchanged pyproject.toml gives the same file, whatever pip-tools does next).
LOCK_PYTHON ?= python3.11
LOCK_TOOLS := pip==26.3 pip-tools==7.6.2
MLFLOW_PORT ?= 5000
export MLFLOW_PORT
export MLFLOW_TRACKING_URI ?= http://127.0.0.1:$(MLFLOW_PORT)
export PATH := $(abspath $(BIN)):$(PATH)

SEED ?= 0

.PHONY: help demo real-speech test test-fast lint format server server-stop clean-venv bench quality venv lock lock-upgrade plots-template dvc-deps
.DEFAULT_GOAL := help

help: ## list the targets
	@echo "usage: make <target>   (the lock is $(LOCK); .venv is built from it)"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:[^#]*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The lock's pins, then the project itself without resolving again (--no-deps): what CI
# installs is the lock. Rebuilt in place when the lock or pyproject.toml changes.
$(BIN)/.installed: $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; v == "3.11" or print(f"warning: $(LOCK) is resolved for Python 3.11, $(PYTHON) is {v}: set PYTHON=python3.11", file=sys.stderr)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

venv: $(BIN)/.installed ## build .venv from the lock (dependencies, dev extra, the project editable)

demo: $(BIN)/.installed ## build .venv, start the MLflow server, run the pipeline on the demo corpus
	deepfake-audio server start
	dvc repro
	@echo
	@echo "MLflow UI:        $(MLFLOW_TRACKING_URI)  (experiment 'deepfake-audio': tuning trials are child runs)"
	@$(BIN)/python -c "import json; m=json.load(open('reports/metrics.json')); r=json.load(open('reports/registry.json')); \
	print(f\"test EER:         {m['test_eer']:.2%} (synthetic demo corpus: it exercises the pipeline, it is not a benchmark)\"); \
	b=m.get('baseline_lfcc_gmm_test_eer'); b is None or print(f\"LFCC-GMM EER:     {b:.2%} (the classic baseline, same clips)\"); \
	print(f\"registered model: {r['model_name']} version {r['version']} aliases {', '.join(r['aliases'])}\")"
	@echo "next:             dvc exp run -S tune.max_trials=6 && dvc exp show"

# The recommended real-speech detector (docs/pipeline.md, "Real speech: make real-speech"):
# one `dvc exp run` with benchmarks/real_speech.yaml's settings on the five shared corpora,
# registered as its own model. The local server is started only when MLFLOW_TRACKING_URI is
# the local default; any other is used as it is.
real-speech: $(BIN)/.installed ## train + register the real-speech detector on ../shared/datasets (SEED=0)
	@if [ "$(MLFLOW_TRACKING_URI)" = "http://127.0.0.1:$(MLFLOW_PORT)" ]; then deepfake-audio server start; fi
	$(BIN)/python -m benchmarks real-speech --seed $(SEED)

# pytest-xdist: TEST_WORKERS processes, each test file on one of them (module fixtures such as
# the demo pipeline run once). TEST_WORKERS=1 runs them in this process, one at a time.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: $(BIN)/.installed ## run the whole test suite (TEST_WORKERS=2 processes)
	$(PYTEST)

test-fast: $(BIN)/.installed ## run the tests not marked slow
	$(PYTEST) -m "not slow"

lint: $(BIN)/.installed ## ruff check and format check of src, tests, benchmarks and scripts
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: $(BIN)/.installed ## ruff fix and format src, tests, benchmarks and scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

server: $(BIN)/.installed ## start the local MLflow server
	deepfake-audio server start

server-stop: ## stop the local MLflow server
	deepfake-audio server stop

# Benchmark suite (~10 min on 2 quiet CPU cores): reports/benchmarks.json + a Markdown table.
# It starts its own MLflow server on a free port. e.g. make bench BENCH_ARGS="--only features --quick"
bench: $(BIN)/.installed ## run the benchmark suite (BENCH_ARGS="--only features --quick")
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Seed variance: N seeds per architecture as DVC experiments through `dvc queue`, on the
# server `make server` runs; reports/quality.json. e.g. make quality QUALITY_ARGS="--architectures
# compact_cnn,lcnn -S data.source=folders -S data.path=../shared/datasets/for-sample"
# Leave-one-corpus-out over a data.corpora list (reports/loco.json, reports/loco.md), e.g.
# make quality QUALITY_ARGS="--loco --corpora benchmarks/loco_shared.yaml --seeds 0"
quality: $(BIN)/.installed ## seeds 0,1,2 of the pipeline via dvc queue -> reports/quality.json
	deepfake-audio server start
	$(BIN)/python -m benchmarks quality $(QUALITY_ARGS)

# `dvc plots show` draws offline: .dvc/config names .dvc/plots/offline.html, which inlines
# vega, vega-lite and vega-embed at the versions pinned in scripts/plots_template.py (those
# dvc-render loads from a CDN). Rebuilds it and LICENSES.txt from npm; needs npm and network.
plots-template: ## rebuild .dvc/plots/offline.html (dvc plots show offline) from pinned npm packages
	$(PYTHON) scripts/plots_template.py

# Each stage's src/ deps in dvc.yaml = the modules it imports (tests/test_architecture.py checks).
dvc-deps: $(BIN)/.installed ## rewrite the code deps of every dvc.yaml stage from its imports
	$(BIN)/python scripts/dvc_deps.py

clean-venv: ## delete .venv (the next target that needs it rebuilds it from the lock)
	rm -rf $(VENV)

# pip-compile in a throwaway venv of LOCK_PYTHON (checked: CPython 3.11, linux x86_64), over
# the old lock so that the pins pyproject.toml still allows stay (lock-upgrade: newest allowed).
# Index and find-links options are left out (the lock is installed with pip's own config);
# setuptools and pip are left out too (the venv's own, as tested). The header's stamp of
# pyproject's dependency lists is what tests/test_lock.py compares.
define relock
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(LOCK_PYTHON) -c 'import platform, sys; sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64" or sys.exit("make lock: $(LOCK) is for CPython 3.11 on linux x86_64, and LOCK_PYTHON=$(LOCK_PYTHON) is not")'; \
	echo "lock: resolving pyproject.toml with $(LOCK_TOOLS) in $$tmp"; \
	$(LOCK_PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet $(LOCK_TOOLS); \
	if [ -f $(LOCK) ]; then cp $(LOCK) "$$tmp/lock.txt"; fi; \
	CUSTOM_COMPILE_COMMAND="make lock" "$$tmp/venv/bin/pip-compile" --quiet --no-config $(1) \
		--extra dev --extra whisper --extra whisper-base --strip-extras --annotation-style line \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--output-file "$$tmp/lock.txt" pyproject.toml; \
	stamp=$$("$$tmp/venv/bin/python" tests/test_lock.py --stamp); \
	{ echo "# $(LOCK): the exact versions tested. make venv (so demo, test and CI) installs them."; \
	  echo "# pyproject.toml's dependencies, dev, whisper and whisper-base extras, for CPython"; \
	  echo "# 3.11 on linux x86_64; not the gpu extra (no GPU in CI: pip install -e '.[gpu]' adds"; \
	  echo "# it). Never edit by hand: change pyproject.toml, then make lock (or make lock-upgrade:"; \
	  echo "# newest allowed)."; \
	  echo "# pyproject-sha256: $$stamp"; \
	  cat "$$tmp/lock.txt"; } > "$$tmp/new"; \
	mv "$$tmp/new" $(LOCK); \
	echo "lock: wrote $(LOCK) ($$(grep -c '==' $(LOCK)) pins); make venv installs it"
endef

lock: ## re-resolve the lock after a pyproject.toml change, keeping the pins it still allows
	$(call relock,)

lock-upgrade: ## re-resolve the lock to the newest versions pyproject.toml allows
	$(call relock,--upgrade)
