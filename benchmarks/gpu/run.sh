#!/usr/bin/env bash
# One device session (see ../shared/GPU.md): the GPU test suite, then the GPU benchmarks, logs under $OUT.
# Run from the repository root on the GPU machine, with the diffusers wheel carried in .whl/ (git-ignored, so
# name it in what travels with the checkout, e.g. the device tool's carry):
#   bash benchmarks/gpu/run.sh            (OUT defaults to out/gpu)
# then copy $OUT/* into benchmarks/results/gpu/.
source "$(dirname "$0")/setup.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
# each part has its own time limit, so one that hangs leaves the others their share of the 10-minute call
quiet() { grep -v "should be kept in float32"; }
timeout 170 python3 -m pytest -m gpu -q -n 4 -rfE --durations=8 -p no:cacheprovider 2>&1 | tee "$OUT/gpu-test.log"
timeout 150 python3 -m benchmarks.tiling_overhead --device cuda --dtype float16 --sizes 1024 2048 4096 --tile-batch 1024 --repeats 5 --out "$OUT" 2>&1 | quiet | tee "$OUT/tiling_overhead.log"
timeout 150 python3 -m benchmarks.gpu_overhead --out "$OUT" 2>&1 | quiet | tee "$OUT/gpu_overhead.log"
