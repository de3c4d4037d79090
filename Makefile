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

.PHONY: install demo test test-fast lint format docs bench clean

# Torch goes in first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(DPAUDIT) demo --resume

# CI runs `make test`: the lint gate first, then every test (slow ones included).
test: install lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

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

bench: install
	$(PY) benchmarks/dp_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
