# ml_platform — two commands do all setup on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export ML_PLATFORM_HOME ?= $(CURDIR)/.ml_platform
export DAGSTER_HOME ?= $(ML_PLATFORM_HOME)/dagster
# No usage pings from a machine that may have no internet.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export DAGSTER_DISABLE_TELEMETRY := true

.PHONY: install demo test test-fast lint bench bench-deps browser-deps serve-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Installs exactly the versions of requirements.lock (hash-checked), then the project itself.
# Bytecode is compiled here: with PYTHONDONTWRITEBYTECODE=1 (set on these machines) Python never
# caches it, and every Dagster process would recompile all it imports (seconds each).
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip sync --python $(BIN)/python --require-hashes --compile-bytecode requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

# The project's own modules (an editable install is not compiled by uv); only changed ones again.
$(VENV)/.compiled: $(VENV)/.installed $(shell find ml_platform -name '*.py')
	$(BIN)/python -m compileall -q -j 0 ml_platform
	touch $@

install: $(VENV)/.compiled

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

demo: install serve-deps
	$(BIN)/ml-platform demo

browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: install browser-deps serve-deps
	$(BIN)/python -m pytest ml_platform_tests --durations=30

# Tests that need no materialized home, cluster or service: run them on every change.
test-fast: install
	$(BIN)/python -m pytest ml_platform_tests -m "not integration" -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check ml_platform ml_platform_tests bench examples
	$(BIN)/ruff format --check ml_platform ml_platform_tests bench examples

# HAProxy is Ray Serve's ingress in the fast serving mode (the default wherever it is installed).
serve-deps:
	@command -v haproxy >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null)

# wrk (HTTP) and h2load (gRPC over HTTP/2) drive the serving benchmark.
bench-deps: serve-deps
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null)

bench: install bench-deps
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .ml_platform dbt_project/target
