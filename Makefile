# droptune — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
MLFLOW_URI ?= sqlite:///$(CURDIR)/mlruns/mlflow.db

.DEFAULT_GOAL := help
.PHONY: help install lint format test test-fast train tune ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv and install droptune with its dev tools
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'

lint: ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: ## the whole test suite (offline, CPU), as CI runs it
	$(PY) -m pytest -q

test-fast: ## the suite without the tests marked slow
	$(PY) -m pytest -q -m "not slow"

train: ## train one config: make train ARGS="data=fashion_mnist model.dropout.hidden=0.5"
	$(PY) pipelines/train.py $(ARGS)

tune: ## start or resume a study: make tune ARGS="data=mnist study.n_trials=200"
	$(PY) pipelines/tune.py $(ARGS)

ui: ## MLflow UI on http://127.0.0.1:5000 (UI_HOST / UI_PORT to change)
	@echo "droptune runs (open these: MLflow opens experiments on a GenAI page without runs):"
	@$(PY) -m droptune.tracking $(MLFLOW_URI) http://$(UI_HOST):$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_URI) --host $(UI_HOST) --port $(UI_PORT)

clean: ## remove run outputs (keeps mlruns/ and data/)
	rm -rf outputs multirun .pytest_cache
