# One front door. Every target the README names is here; CI calls `make test` like a person does.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= models
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup models schemas demo lint test test-unit bench deploy-validate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create the virtual environment and install the project (idempotent)

models: $(STAMP) ## Build the two demo models into $(MODEL_DIR)/ if missing (FORCE=1 rebuilds)
	$(PY) -m training.train --model_dir=$(MODEL_DIR) $(if $(FORCE),--force,)

schemas: $(STAMP) ## Regenerate the published JSON Schemas in schemas/ from the model interfaces
	$(PY) -m training.schemas

INFERENCE ?= in_process
RUNNER ?= direct
demo: models ## The main job: emulator traffic through both streaming pipelines (INFERENCE=tf_serving: over gRPC; RUNNER=flink: on a local Flink cluster)
	$(PY) -m localdev.demo --model_dir=$(MODEL_DIR) --inference=$(INFERENCE) --runner=$(RUNNER) $(DEMO_ARGS)

lint: $(STAMP) ## ruff: lint and format checks (settings in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint ## Lint, then the whole test suite (unit, emulator, model server, backfill, Flink, deployment)
	$(PY) -m pytest tests -ra $(PYTEST_ARGS)

test-unit: $(STAMP) ## The unit layer alone: nothing outside the process, under a minute
	$(PY) -m pytest tests -m "not integration" -q $(PYTEST_ARGS)

bench: models ## Benchmarks: signature ceiling, backfill, streaming, plain-consumer baseline -> benchmarks/results/
	$(PY) -m benchmarks.run --model_dir=$(MODEL_DIR) $(BENCH_ARGS)

deploy-validate: $(STAMP) ## Render and validate both Kubernetes overlays offline (kubectl, Maven)
	$(PY) -m deploy validate --overlay all

clean: ## Stop a local Flink, remove the virtual environment, built models, results and build/ (Flink, jars)
	-@test -x $(PY) && $(PY) -m localdev.flink stop
	rm -rf $(VENV) $(MODEL_DIR) benchmarks/results build .pytest_cache *.egg-info
