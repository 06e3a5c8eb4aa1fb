# make demo · make test · make test-slow · make bench — each works from nothing on a fresh CPU machine.
# The CPU build of torch is installed first, so the package's `torch>=2.4` pulls no CUDA wheels.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
TORCH  ?= torch==2.13.0
OUT    ?= out/bench
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow gpu-test bench clean

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gen demo --out out/demo

# The formatting, the import layering and the fast suite (about 2 minutes on 2 cores).
test: $(STAMP)
	$(BIN)/ruff format --check --quiet gen tests benchmarks examples
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 -q -p no:cacheprovider -m "not slow and not gpu"

# The effect tests (several seeds, mutation checks), zoo models, round trips, the README and the examples.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -p no:cacheprovider -m "slow and not gpu"

# On a GPU machine: install a CUDA build of torch first (e.g. make gpu-test TORCH=torch), then the gpu-marked tests.
gpu-test: $(STAMP)
	$(BIN)/python -m pytest -m gpu -q -p no:cacheprovider

# Benchmarks write JSON + PNG into $(OUT); `make bench OUT=benchmarks/results` refreshes the tracked figures.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.overhead --out $(OUT)
	$(BIN)/python -m benchmarks.tiling_overhead --out $(OUT)
	$(BIN)/python -m benchmarks.value_guidance --out $(OUT)
	$(BIN)/python -m benchmarks.large_image --out $(OUT)
	$(BIN)/python -m benchmarks.large_image_fidelity --out $(OUT)
	$(BIN)/python -m benchmarks.cep --out $(OUT)
	$(BIN)/python -m benchmarks.hybrid --out $(OUT)
	$(BIN)/python -m benchmarks.scale --out $(OUT)
	$(BIN)/python -m benchmarks.generate --out $(OUT)

clean:
	rm -rf $(VENV) out
