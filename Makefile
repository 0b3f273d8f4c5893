# Two entry points for a fresh machine: `make simulate` and `make test`.
# Everything lands in .venv (in the repo, ignored by git); heavy builds such as
# the Kubernetes control plane are cached outside the repo (~/.cache/kubenpu).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: simulate test lint venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

simulate: $(STAMP)
	$(BIN)/kubenpu simulate

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# The e2e tests run against the Kubernetes binaries built here, the real-node tests also on
# the containerd, registry and images built here, the chart tests render with the helm built
# here (each a no-op once it is cached); the console's browser and Prometheus tests on
# Debian's chromium, chromium-driver and prometheus (installed when missing).
test: lint
	bash hack/build-control-plane.sh
	bash hack/build-node.sh
	bash hack/build-images.sh
	bash hack/build-helm.sh
	bash hack/install-test-tools.sh
	$(BIN)/pytest
