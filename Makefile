# droptune — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# one lock for every platform droptune supports, with droptune's extras
LOCK_FLAGS := --universal --python-version 3.10 --extra dev --extra slurm
ARGS ?=
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
MLFLOW_URI ?= sqlite:///$(CURDIR)/mlruns/mlflow.db
OPTUNA_STORAGE ?= sqlite:///$(CURDIR)/mlruns/optuna.db
DASHBOARD_PORT ?= 8080
ARTIFACTS_DESTINATION ?= $(CURDIR)/mlruns/server-artifacts
# the MLflow servers below run without MLflow's GenAI job runner (judges, scorers, trace
# rollups): droptune starts none, and the runner's three consumer processes cost CPU and memory

.DEFAULT_GOAL := help
# ARGS reach Hydra as typed: no brace or glob expansion (model.dropout.sites={encoder.*:0.1,head.*:0.5})
train sites tune worker bench report seeds-report: .SHELLFLAGS := +B -f -c
.PHONY: help install lock upgrade servers lint format test test-fast train sites tune worker report seeds-report mlflow-server bench ui dashboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv with the locked dependencies (requirements.lock) and droptune itself
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$$(grep -m1 '^uv==' requirements.lock)"
	$(UV) pip sync -q --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v slurmctld munged chromium >/dev/null \
		|| $(MAKE) --no-print-directory servers

lock: ## re-resolve requirements.lock after editing pyproject.toml (keeps every other pin)
	$(UV) pip compile -q $(LOCK_FLAGS) -o requirements.lock pyproject.toml

upgrade: ## requirements.lock with the newest releases pyproject.toml allows; then make install test
	$(UV) pip compile -q $(LOCK_FLAGS) --upgrade -o requirements.lock pyproject.toml

servers: ## install Debian's PostgreSQL, SLURM, munge (the cluster tests start throwaway ones) and Chromium (the page tests)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql slurm-wlm munge chromium

lint: ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

PYTEST := $(PY) -m pytest -q

test: ## the whole test suite (offline, CPU), as CI runs it
	$(PYTEST)

test-fast: ## the suite without the slow, cluster (postgres, slurm) and compiled tests
	$(PYTEST) -m "not slow and not postgres and not slurm and not compiled"

train: ## train one config: make train ARGS="data=fashion_mnist model.dropout.hidden=0.5"
	$(PY) pipelines/train.py $(ARGS)

sites: ## list a model's dropout sites, no training: make sites ARGS="model=custom model._target_=mypkg.Net"
	$(PY) pipelines/sites.py hydra.output_subdir=null hydra.run.dir=. hydra/job_logging=stdout $(ARGS)

tune: ## start or resume a study: make tune ARGS="data=mnist study.n_trials=200"
	$(PY) pipelines/tune.py $(ARGS)

worker: ## a cluster worker: make worker ARGS="study=postgres tracking=server study.name=x"
	$(PY) pipelines/tune.py $(ARGS)

report: ## retrain a study's best configs and baselines over seeds: make report ARGS="study.name=fm-a"
	$(PY) pipelines/report.py $(ARGS)

SONAR_STUDY := experiment=seed004_sonar_hidden search=sonar_dropout study.name=sonar-seeds
seeds-report: ## the seed tutorials' models over seeds, with intervals, into docs/reports/ (hours on 2 cores)
	$(PY) pipelines/report.py compare=d2l_fashion paths.output_dir=$(CURDIR)/docs/reports/d2l_fashion $(ARGS)
	$(PY) pipelines/report.py compare=seed004_sonar paths.output_dir=$(CURDIR)/docs/reports/seed004_sonar $(ARGS)
	$(PY) pipelines/tune.py $(SONAR_STUDY) study.n_trials=16 $(ARGS)
	$(PY) pipelines/report.py $(SONAR_STUDY) compare=seed004_sonar report.from_study=true report.top_k=1 \
		paths.output_dir=$(CURDIR)/docs/reports/seed004_sonar_tuned $(ARGS)

mlflow-server: ## MLflow server: MLFLOW_BACKEND_STORE_URI (PostgreSQL), artifacts in mlruns/server-artifacts
	@test -n "$(MLFLOW_BACKEND_STORE_URI)" || { echo "set MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://user:pass@host/mlflow"; exit 2; }
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --backend-store-uri "$(MLFLOW_BACKEND_STORE_URI)" \
		--artifacts-destination "$(ARTIFACTS_DESTINATION)" --host $(UI_HOST) --port $(UI_PORT)

bench: ## benchmark: reference vs standard vs fused runner, JSON lines (ARGS to shrink on a CPU)
	$(PY) pipelines/bench.py $(ARGS)

ui: ## MLflow UI on http://127.0.0.1:5000 (UI_HOST / UI_PORT to change)
	@echo "droptune runs (these links open MLflow's model-training view; a study's, its trials):"
	@$(PY) -m droptune.mlflow_ui $(MLFLOW_URI) http://$(UI_HOST):$(UI_PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_URI) --host $(UI_HOST) --port $(UI_PORT) --workers 2

dashboard: ## Optuna's dashboard of the studies on http://127.0.0.1:8080 (OPTUNA_STORAGE, DASHBOARD_PORT to change)
	@echo "Optuna's dashboard: http://$(UI_HOST):$(DASHBOARD_PORT)/dashboard/ (history, importances, live updates)"
	@$(VENV)/bin/optuna-dashboard "$(OPTUNA_STORAGE)" --host $(UI_HOST) --port $(DASHBOARD_PORT)

clean: ## remove run outputs (keeps mlruns/ and data/)
	rm -rf outputs multirun .pytest_cache
