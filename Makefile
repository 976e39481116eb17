# One front door. Every target the README names is here; CI calls `make test` like a person does.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= models
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup lock models schemas demo lint test test-unit bench bench-gpu deploy-validate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The installer first, from its own hashed lock: uv, one wheel with no dependencies, which the pip any Python bundles
# installs in hash mode. Then uv makes the venv exactly the dev lock (every file checked against its hash, nothing
# resolved against the index, so a release after the lock changes nothing); then the project alone, built by the
# lock's setuptools (build isolation would fetch one unpinned). uv compiles the bytecode at install, as pip does: it
# does not by default, and where PYTHONDONTWRITEBYTECODE is set every process would compile TensorFlow's source
# again (8.6 s a process here).
UV := $(VENV)/bin/uv
$(STAMP): setup.py requirements/installer.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/installer.txt
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) --require-hashes requirements/dev.txt
	$(UV) pip install --quiet --compile-bytecode --python $(PY) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP) ## Create the virtual environment from the hashed lock requirements/dev.txt, then the project (idempotent)

# One resolution for one target (the images': Linux x86_64, CPython 3.11) wherever it runs; uv keeps the pins an
# existing lock has where it can. The image locks are constrained by the dev lock, so the images run the versions
# the tests ran; the build lock is setuptools alone and the installer lock uv alone, each at the dev lock's version.
LOCK := $(UV) pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"
lock: $(STAMP) ## Resolve setup.py into the hashed locks in requirements/ (after changing a dependency; commit both)
	$(LOCK) setup.py --extra dev -o requirements/dev.txt
	$(LOCK) setup.py --constraints requirements/dev.txt -o requirements/runtime.txt
	$(LOCK) setup.py --extra gpu --constraints requirements/dev.txt -o requirements/worker-gpu.txt
	echo setuptools | $(LOCK) - --constraints requirements/dev.txt -o requirements/build.txt
	echo uv | $(LOCK) - --constraints requirements/dev.txt -o requirements/installer.txt

models: $(STAMP) ## Build the two demo models into $(MODEL_DIR)/ if missing (FORCE=1 rebuilds)
	$(PY) -m training.train --model_dir=$(MODEL_DIR) $(if $(FORCE),--force,)

schemas: $(STAMP) ## Regenerate the published JSON Schemas in schemas/ from the model interfaces
	$(PY) -m training.schemas

INFERENCE ?= in_process
RUNNER ?= flink
demo: models ## The main job: emulator traffic through both streaming pipelines on a local Flink cluster (INFERENCE=tf_serving: over gRPC; RUNNER=direct: on the DirectRunner)
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

# The GPU worker image's packages (the hashed lock requirements/worker-gpu.txt, TensorFlow with CUDA) in a venv of
# their own; the project runs from the source tree, as in the image.
GPU_VENV ?= .venv-gpu
bench-gpu: models ## On an NVIDIA GPU machine: in-process scoring, GPU against CPU, batches 1-2048, 1 and 2 model copies -> benchmarks/results/gpu/
	@test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/installer.txt
	$(GPU_VENV)/bin/uv pip install --quiet --compile-bytecode --python $(GPU_VENV)/bin/python --require-hashes -r requirements/worker-gpu.txt
	PYTHONPATH=$(CURDIR) $(GPU_VENV)/bin/python -m benchmarks.gpu --model_dir=$(MODEL_DIR) --out=benchmarks/results/gpu
	$(PY) -m benchmarks.gpu --plot benchmarks/results/gpu/gpu.json

deploy-validate: $(STAMP) ## Render and validate both Kubernetes overlays offline (kubectl, Maven)
	$(PY) -m deploy validate --overlay all

clean: ## Stop a local Flink, remove the virtual environment, built models, results and build/ (Flink, jars)
	-@test -x $(PY) && $(PY) -m localdev.flink stop
	rm -rf $(VENV) $(MODEL_DIR) benchmarks/results build .pytest_cache *.egg-info
