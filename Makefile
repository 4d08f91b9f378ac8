# Every target here is a command the README names.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Tests run on pytest-xdist workers, one per core by default; tests that submit to the local Slurm
# cluster share one worker (tests/conftest.py). PYTEST_WORKERS=0 runs them all in this process.
# A worker that crashes is not replaced: the run fails at once, naming the test it was running
# (replacing it left --dist loadgroup waiting with idle workers until killed).
PYTEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup --max-worker-restart=0)

.PHONY: install test test-fast lint format demo demo-fmnist bench gpu-check gpu-wheels slurm-up slurm-down clean

install: $(STAMP)

# torch and torchvision are pinned to the releases that pip finds on the project machines' disk;
# installing them first keeps pip from resolving a multi-gigabyte download.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev,search]'
	touch $(STAMP)

# Ends with the count of skipped tests by reason; under CI=true a skip for any reason but
# "needs CUDA" fails it (tests/helpers/skips.py).
test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not slurm" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The demo sweep: all seven modes on digits, then the report. Hydra's basic launcher runs the jobs
# one after another in this process, which on two cores beats parallel processes (each pays its
# start-up); on a bigger machine: make demo DEMO_ARGS=hydra/launcher=local
ifndef DEMO_DIR
DEMO_DIR := multirun/demo/$(shell date +%Y-%m-%d_%H-%M-%S)-make
endif
DEMO_ARGS ?=
demo: install
	$(BIN)/dcutmix-train -m +sweep=demo hydra.sweep.dir=$(DEMO_DIR) $(DEMO_ARGS)
	$(BIN)/dcutmix-report $(DEMO_DIR)

# The real-data demo: the seven modes and random_erasing on Fashion-MNIST (Debian's
# dataset-fashion-mnist or ./data; when neither has it, torchvision fetches it into ./data). One
# torch thread by default: on a two-core machine shared with other work it trained ResNet-20
# about 3x faster than torch's two (README, Performance); FMNIST_THREADS=2 on a quiet one.
ifndef FMNIST_DIR
FMNIST_DIR := multirun/demo_fmnist/$(shell date +%Y-%m-%d_%H-%M-%S)-make
endif
FMNIST_ARGS ?=
FMNIST_THREADS ?= 1
demo-fmnist: install
	OMP_NUM_THREADS=$(FMNIST_THREADS) $(BIN)/dcutmix-train -m +sweep=demo_fmnist hydra.sweep.dir=$(FMNIST_DIR) $(FMNIST_ARGS)
	$(BIN)/dcutmix-report $(FMNIST_DIR)

bench: install
	$(BIN)/python -m dcutmix.bench mixing

# The GPU check: .venv's python where there is one, else the machine's python3, which (on the
# bare GPU machine) installs the wheels of `make gpu-wheels` from .whl/ into a temporary folder.
# Without CUDA it exits 3 at once; GPU_CHECK_ARGS=--quick runs a 60-second subset.
GPU_CHECK_ARGS ?=
GPU_PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	$(GPU_PY) -m dcutmix.bench.gpu_check $(GPU_CHECK_ARGS)

gpu-wheels:
	PY=$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY)) bash scripts/gpu_wheels.sh

slurm-up:
	bash .ci/slurm-up.sh

slurm-down:
	bash .ci/slurm-down.sh

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
