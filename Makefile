# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
export PYTHONHASHSEED := 0

.PHONY: venv demo test lint typecheck unit bench clean browser

# The stamp is rebuilt when pyproject changes. torch is pinned first: on a CPU box the exact
# version takes the local CPU wheel, where a bare `torch` would pull a multi-GB CUDA build.
$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[dev,app,export]"
	touch $@

venv: $(VENV)/.stamp

demo: venv
	$(PY) -m lungcancer.cli demo --config configs/quick.yaml --out runs/demo

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy src

unit: venv
	$(VENV)/bin/pytest -n 2 --dist loadfile

test: lint typecheck unit

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
