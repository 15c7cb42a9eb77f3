# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.torchdoctor-installed

.PHONY: demo test lint bench gpu-check gpu-wheels clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, pinned, so the range in pyproject pulls nothing else.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/torchdoctor demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

bench: $(STAMP)
	$(BIN)/torchdoctor bench --markdown BENCHMARKS.generated.md

# On a lent GPU machine (its own CUDA torch, no network): the cuda tests and the GPU suite, in
# one go, results in gpu-check-results/. Never creates a venv; a dry run without CUDA.
GPU_PYTHON ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)
gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py --out gpu-check-results

# Here, before borrowing the GPU machine: wheels of what its Python lacks (libcst), built for
# its interpreter (GPU_PY) and x86-64 Linux, not for this one; carry .gpu-wheels/ along.
GPU_PY ?= 3.12
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --implementation cp \
	  --python-version $(GPU_PY) --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-wheels libcst

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info torchdoctor-out
