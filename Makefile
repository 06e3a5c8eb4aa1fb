# make demo · make test · make bench — each works from nothing on a fresh CPU machine.
# The CPU build of torch is installed first, so the package's `torch>=2.4` pulls no CUDA wheels.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test gpu-test bench clean

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gen demo --out out/demo

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 -q -p no:cacheprovider

# On a GPU machine: install a CUDA build of torch first (e.g. make gpu-test TORCH=torch), then the gpu-marked tests.
gpu-test: $(STAMP)
	$(BIN)/python -m pytest -m gpu -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.value_guidance
	$(BIN)/python -m benchmarks.large_image
	$(BIN)/python -m benchmarks.cep
	$(BIN)/python -m benchmarks.hybrid
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf $(VENV) out
