# bulk-ingest: Kafka -> PostgreSQL (COPY) + HDFS (Parquet). `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

.PHONY: setup
setup: $(STAMP) ## Create .venv, install the package, PostgreSQL + Prometheus (apt), Kafka/Hadoop jars (Maven)
	@$(PY) -m stack install
	@$(PY) -c 'from stack.prometheus import ensure_promtool; ensure_promtool()' 

.PHONY: stack-up
stack-up: setup ## Start Kafka, PostgreSQL and HDFS on 127.0.0.1 (no-op when up); settings in .stack/env
	@$(PY) -m stack up

.PHONY: stack-down
stack-down: ## Stop exactly the stack's processes (data kept)
	@test -x $(PY) && $(PY) -m stack down || true

.PHONY: stack-status
stack-status: ## Show which stack processes run
	@$(PY) -m stack status

.PHONY: stack-clean
stack-clean: ## Stop the stack and delete its data (.stack/); the jar cache is kept
	@$(PY) -m stack clean

.PHONY: test
test: stack-up ## Set up, start the stack, run the whole suite (unit + integration)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup ## Only the tests that need no server
	$(PY) -m pytest -m 'not integration' $(PYTEST_ARGS)

.PHONY: lint
lint: setup ## ruff (lint + format check) and mypy --strict on the packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: setup ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: demo
demo: stack-up ## Emit events, run the batcher, show what landed in Postgres and HDFS and the metrics
	@$(PY) -m demo

.PHONY: bench
bench: stack-up ## Benchmarks on the local stack (results in bench/results/)
	@test $(VENV)/.installed-bench -nt pyproject.toml || \
		{ $(PY) -m pip install -q -e '.[dev,bench]' && touch $(VENV)/.installed-bench; }
	$(PY) -m bench $(BENCH_ARGS)
