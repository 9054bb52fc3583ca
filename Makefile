# The README promise: `make run` (the main job) and `make test` (the suite) each set everything up.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
OUT     ?= out/cpu-smoke

.PHONY: run test lint format tools clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[trainer,operator,dev]"
	touch $@

## the main job: a local BenchmarkRun of the embedded default (CPU smoke suite)
run: $(STAMP)
	$(VENV)/bin/trainbench run examples/cpu-smoke.yaml --local --out $(OUT)

## test tools the suite talks to for real (kubectl, prometheus/promtool, g++ for type verify): Debian packages
tools:
	@command -v kubectl >/dev/null && command -v promtool >/dev/null && command -v g++ >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl prometheus g++ >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## the test suite: lint, then pytest
test: $(STAMP) tools lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out
