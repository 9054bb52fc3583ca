# The README promise: `make run` (the main job) and `make test` (the suite) each set everything up.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
OUT     ?= out/cpu-smoke
OTAVA   := 0.8.0

.PHONY: run test lint format tools clean images images-tools images-test images-clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[trainer,operator,dev]"
	$(PY) -m pip install -q --no-deps apache-otava==$(OTAVA)  # change points; its own deps clash (pyproject.toml)
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

## container images (images/build.sh; docs/install.md "Images"). `make images` builds every image from its
## upstream base (needs a registry to pull from); REGISTRY=... TAG=... PUSH=1 also pushes; IMAGES="a b" picks;
## BASE=local builds operator + trainer-cpu on a Debian base made here with debootstrap (no registry needed)
BASE         ?= upstream
IMAGES       ?=
REGISTRY     ?=
TAG          ?=
PUSH         ?= 0
TORCH_WHEELS ?=
images:
	BASE="$(BASE)" IMAGES="$(IMAGES)" REGISTRY="$(REGISTRY)" TAG="$(TAG)" PUSH="$(PUSH)" TORCH_WHEELS="$(TORCH_WHEELS)" \
	  images/build.sh build

## what building and running images here needs: podman (runc: crun fails on this sandbox's cgroups), debootstrap
images-tools:
	@command -v podman >/dev/null && command -v debootstrap >/dev/null && command -v runc >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null; }

## CI: build operator + trainer-cpu on the local base (torch from this machine's wheel directory when it has the
## CPU wheel), then smoke-test the built images (tests/images); `make images-clean` removes them
CPU_WHEELS := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),/opt/wheels,)
images-test: $(STAMP) images-tools
	BASE=local TORCH_WHEELS="$(or $(TORCH_WHEELS),$(CPU_WHEELS))" images/build.sh build operator trainer-cpu
	$(PY) -m pytest tests/images -q

images-clean:
	images/build.sh clean
