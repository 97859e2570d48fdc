# `make serve`: set up, train a model if the store has none, serve on :3000.
# `make test`:  set up, lint, run the whole test suite; `make test-fast`: unit + in-process tiers.
# The interpreter .venv is built on: the system's own Python 3.11 where it has one that can make
# a venv (Debian's /usr/bin/python3.11, the one the image runs: built with profile-guided and
# link-time optimization, it started `bentoml serve` in 0.80x the time of pyenv's default build
# of 3.11.7, docs/benchmarks.md "Sixth pass"), else python3.11 or python3 on PATH.
ifndef PYTHON
PYTHON := $(shell for python in /usr/bin/python3.11 /usr/local/bin/python3.11 \
	"$$(command -v python3.11)" "$$(command -v python3)"; do \
	[ -x "$$python" ] && "$$python" -c 'import ensurepip, venv' 2>/dev/null && { echo "$$python"; break; }; done)
endif
# The binary behind it (a pyenv shim is a script): .venv must run this one.
PYTHON_BINARY := $(shell '$(PYTHON)' -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell (sha1sum pyproject.toml; echo '$(PYTHON_BINARY)') | sha1sum | cut -c1-12)
export BENTOML_DO_NOT_TRACK := true

# The tiers (markers in pyproject.toml): the end-to-end tests start real servers, builds,
# containers and browsers; everything else runs in process.
FAST_TESTS := not e2e and not docker and not browser and not slow

.PHONY: setup model train retrain serve test test-fast lint bench bench-setup system-deps docker-engine docker

setup: $(STAMP)

# torch is chosen once, when the environment has none (scripts/torch_source.py): TORCH_INDEX_URL
# when set (e.g. https://download.pytorch.org/whl/cpu), else a local torch-*+cpu wheel in pip's
# find-links, else torch from PyPI (the CUDA build on Linux). README "Setup" has the costs.
TORCH_INDEX_URL ?=
# The browser test's driver, without its trio (pyproject.toml's dev extra says why and lists
# its other requirements: keep them in step when this changes).
SELENIUM := selenium==4.51.0

# A .venv built on another interpreter is built again on this one (and torch chosen again).
$(STAMP): pyproject.toml scripts/torch_source.py
	if [ -x $(BIN)/python ] && [ "$$(readlink -f $(BIN)/python)" != '$(PYTHON_BINARY)' ]; then \
	  echo "setup: .venv runs $$(readlink -f $(BIN)/python), not $(PYTHON_BINARY): building it again"; \
	  rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python scripts/torch_source.py --install --quiet $(if $(TORCH_INDEX_URL),--index-url '$(TORCH_INDEX_URL)')
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[train,dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(SELENIUM)
	$(BIN)/pip uninstall --quiet --yes trio trio-websocket 2>/dev/null || true  # older set-ups
	rm -f $(VENV)/.installed-* && touch $@

model: setup  ## train (the robust recipe) and register a model unless the store has one
	$(BIN)/bentoml models get mnist-mlp:latest >/dev/null 2>&1 || $(BIN)/mnist-train --recipe robust

train: setup
	$(BIN)/mnist-train $(ARGS)

retrain: setup  ## retrain, gate, promote, ship: make retrain ARGS="--dry-run"
	$(BIN)/mnist-build $(ARGS)

# Every interface; `make serve SERVE_HOST=127.0.0.1` listens for this machine only.
SERVE_HOST ?= 0.0.0.0

# Machines that set PYTHONDONTWRITEBYTECODE=1 (this one, the image) cache no bytecode of the
# service's own modules, and each process of a start compiled them again (~90 ms for all of
# them in one process, docs/benchmarks.md): compile them first (only what changed since).
COMPILE := $(BIN)/python -m compileall -q service training

serve: model
	$(COMPILE)
	$(BIN)/bentoml serve --host $(SERVE_HOST) --port 3000

system-deps:  ## Chromium + driver for the browser test (Debian, as root)
	bash scripts/system-deps.sh

lint: setup  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service training mnist_client

test: setup system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup  ## the unit and in-process tiers, in about a minute
	$(BIN)/python -m pytest -m "$(FAST_TESTS)" $(PYTEST_ARGS)

docker-engine:  ## a Docker engine and local base image without a registry (Debian, root)
	bash scripts/docker-engine.sh

# The side-by-side peer (TorchServe 0.12) needs Java and the TorchServe pair; wrk drives every run.
BENCH_APT := openjdk-17-jre-headless wrk
BENCH_PIP := torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml

bench-setup: setup  ## Java 17 + wrk (Debian, as root) and TorchServe 0.12 into .venv, when missing
	@if ! command -v java >/dev/null || ! command -v wrk >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "bench-setup: as root: apt-get install -y $(BENCH_APT)" >&2; exit 1; fi; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(BENCH_APT); \
	fi
	@$(BIN)/python -c "import ts, model_archiver, yaml" 2>/dev/null && test -x $(BIN)/torchserve \
	  || $(BIN)/pip install --quiet --disable-pip-version-check $(BENCH_PIP)

bench: model bench-setup  ## training, serving, side-by-side (TorchServe, bare ASGI), Open Inference
	$(COMPILE)
	$(BIN)/python -m benchmarks.run_all $(ARGS)
	$(BIN)/python -m benchmarks.open_inference

docker:  ## the serving image from artifacts/model.pt (add DOCKER_BUILD_ARGS for a local base)
	docker build $(DOCKER_BUILD_ARGS) -t mnist-service .

# ---- orchestrators (docs/deploy.md) ---------------------------------------------------------------
STACK ?= mnist
OVERLAY ?= production
KUBERNETES_VERSIONS := 1.29.0 1.37.0

.PHONY: lb-image swarm-deploy swarm-rm rollout rollback k8s-render k8s-validate test-deploy

lb-image:  ## the HAProxy image in front of the Swarm replicas (same DOCKER_BUILD_ARGS as docker)
	docker build $(DOCKER_BUILD_ARGS) -t mnist-lb deploy/swarm/haproxy

swarm-deploy: docker lb-image  ## the stack on this swarm (create the secret mnist_api_key first)
	docker stack deploy --resolve-image never -c deploy/swarm/stack.yml $(STACK)

swarm-rm:
	docker stack rm $(STACK)

rollout:  ## make rollout IMAGE=mnist-service:<version>: roll a new model into the stack
	MNIST_SWARM_SERVICE=$(STACK)_mnist scripts/rollout deploy $(IMAGE)

rollback:  ## serve the image that served before the last rollout
	MNIST_SWARM_SERVICE=$(STACK)_mnist scripts/rollout rollback

k8s-render: setup  ## print an overlay's manifests: make k8s-render OVERLAY=dev
	$(BIN)/kubectl kustomize deploy/kubernetes/overlays/$(OVERLAY)

k8s-validate: setup  ## every overlay, strictly, against the oldest and newest supported Kubernetes
	set -e; for overlay in deploy/kubernetes/overlays/*/; do \
	    $(BIN)/kubectl kustomize $$overlay > $(VENV)/rendered.yaml; \
	    for version in $(KUBERNETES_VERSIONS); do \
	        $(BIN)/kubernetes-validate --strict --quiet -k $$version $(VENV)/rendered.yaml; \
	        echo "$$overlay: valid for Kubernetes $$version"; \
	    done; \
	done

test-deploy: setup  ## the Swarm and Kubernetes tests only (docker engine: make docker-engine)
	$(BIN)/python -m pytest tests/test_swarm.py tests/test_kubernetes.py $(PYTEST_ARGS)
