# AlexNet ablation suite. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

PROFILE ?=
SEEDS ?=
GPUS ?= 0
PARALLEL ?= 1
DATA ?=
ARGS ?=
FORCE ?=
FROM ?=
VARIANTS ?=
TUNE ?=
LAUNCHER ?= local
SLURM ?=
NO_WAIT ?=
HOST ?= 127.0.0.1
PORT ?= 5000
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# tests in TEST_WORKERS processes (pytest-xdist); a group (the SLURM cluster's tests) stays in one
XDIST = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)
BACKEND_STORE ?= sqlite:///$(CURDIR)/mlflow-server.db
ARTIFACTS ?= $(CURDIR)/mlartifacts

ABLATIONS := $(sort $(basename $(notdir $(wildcard configs/ablations/*.yaml))))
STUDY_FLAGS = $(if $(PROFILE),--profile $(PROFILE)) $(if $(SEEDS),--seeds "$(SEEDS)") $(if $(VARIANTS),--variants "$(VARIANTS)") --gpus $(GPUS) --parallel $(PARALLEL) $(if $(FORCE),--force) $(if $(TUNE),--tune) \
	--launcher $(LAUNCHER) $(if $(SLURM),--slurm "$(SLURM)") $(if $(NO_WAIT),--no-wait) \
	$(if $(DATA),data.name=$(DATA)) $(ARGS)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: help install lint test test-slow test-all train summary ablations ablate-all migrate demo ui server bench gpu-check screenshots clean

help: ## list the targets
	@grep -hE '^[a-zA-Z%_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo
	@echo "  variables: PROFILE=demo (smoke|demo|cifar|paper|tutorial; an ablation file may name its own)  SEEDS=3 or 0,1,2 or auto  VARIANTS=a,b  GPUS=0  PARALLEL=1  DATA=shapes  ARGS=\"key=value ...\"  FORCE=1  TUNE=1  LAUNCHER=local|slurm  SLURM=\"key=value ...\"  NO_WAIT=1"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the suite (re-runs only when pyproject.toml changes)

lint: install ## ruff, and the import layers (lint-imports: contracts in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: install ## the test suite without the heavy end-to-end tests (about 5 minutes on 2 CPU cores)
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

test-slow: install ## the heavy end-to-end tests: whole studies, DDP, SLURM, PostgreSQL, the browser (CI runs them)
	$(PY) -m pytest -m slow $(XDIST) $(PYTEST_ARGS)

test-all: install ## every test
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

train: install ## train one model: make train ARGS="model.activation=tanh"
	$(PY) -m ablations.train --profile $(or $(PROFILE),demo) $(if $(DATA),data.name=$(DATA)) $(ARGS)

summary: install ## per-layer table: make summary ARGS="model.arch=alexnet model.num_classes=1000"
	$(PY) -m ablations.train.summary $(if $(PROFILE),--profile $(PROFILE)) $(if $(DATA),data.name=$(DATA)) $(ARGS)

ablations: install ## list the ablations with their descriptions
	@$(PY) -m ablations.catalog

ablate-%: install ## run one ablation study: make ablate-activation PROFILE=smoke SEEDS=2 (SEEDS=auto: adaptive, in rounds)
	$(PY) -m ablations.study $* $(STUDY_FLAGS)

ablate-all: install ## run every ablation study in configs/ablations/
	@status=0; for a in $(ABLATIONS); do $(PY) -m ablations.study $$a $(STUDY_FLAGS) || status=1; done; exit $$status

report-%: install ## (re)write the report of the newest study: make report-activation (FROM=docs/results/activation: from its shipped evidence)
	$(PY) -m ablations.report $* $(if $(FROM),--from $(FROM))

publish-%: install ## ship the newest study's evidence and its report rebuilt from it in docs/results/NAME/
	$(PY) -m ablations.report $* --publish docs/results

backfill-%: install ## measure the clean training error of a study's runs that predate it: make backfill-dropout (PRECISE_BN=1: errors with BatchNorm's statistics recomputed)
	$(PY) -m ablations.train.backfill $* $(if $(PRECISE_BN),--precise-bn)

power-%: install ## seeds: per comparison of the newest study, the effect its seeds detect and the seeds that settle ±δ: make power-dropout
	$(PY) -m ablations.report.power $* $(if $(FROM),--from $(FROM))

migrate: install ## once, for a store written before neutral values: recompute every run's config_hash from its params
	$(PY) -m ablations.study.migrate

demo: install ## the main job, offline: first_look (3 of the paper's choices, 5 seeds) on synthetic shapes, its reports and summary
	$(PY) -m ablations.demo $(if $(SEEDS),--seeds "$(SEEDS)") --parallel $(if $(filter command line,$(origin PARALLEL)),$(PARALLEL),2) $(if $(FORCE),--force) $(ARGS)

ui: install ## the MLflow UI over the studies' store on http://127.0.0.1:5000 (HOST=, PORT= to change); first prints the clicks to each study (docs/mlflow.md) and its link
	@MLFLOW_UI_URL=http://$(HOST):$(PORT) $(PY) -m ablations.tracking.browse
	$(VENV)/bin/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host $(HOST) --port $(PORT)

server: install ## a shared MLflow tracking server (SQLite, or BACKEND_STORE=postgresql+psycopg://...) on http://127.0.0.1:5000 (HOST=, PORT=)
	$(VENV)/bin/mlflow server --backend-store-uri "$(BACKEND_STORE)" --artifacts-destination $(ARTIFACTS) \
		--serve-artifacts --host $(HOST) --port $(PORT)

bench: install ## throughput of the suite vs a bare PyTorch loop, logging cost, data pipeline
	$(PY) -m tools.bench

gpu-check: install ## on a CUDA machine: paper AlexNet in bf16, channels_last, a few hundred steps
	$(PY) -m tools.gpu_check

screenshots: install ## MLflow UI screenshots of a fresh smoke study, clicked as make ui says, in headless Chromium -> docs/img/ (needs chromium)
	$(PY) -m tests.infra.screenshots $(ARGS)

clean: ## remove the local store, checkpoints, reports and caches (not .venv)
	rm -rf mlflow.db mlruns mlartifacts checkpoints reports/*/ reports/summary.md .pytest_cache
