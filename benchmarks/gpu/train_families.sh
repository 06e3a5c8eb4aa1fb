#!/usr/bin/env bash
# Issue 27's device work, after run.sh in the same session: the training GPU tests (example accelerate configs),
# an SDXL-size and a Flux-size LoRA step at bf16 (time, peak memory), and, where the machine has 2+ GPUs, a full
# SDXL-size step's peak memory per GPU under DDP and under FSDP. Logs and results under $OUT.
#   bash benchmarks/gpu/train_families.sh            (OUT defaults to out/gpu)
source "$(dirname "$0")/setup.sh"
timeout 200 python3 -m pytest tests/test_train_families.py -m gpu -q -rfE -p no:cacheprovider 2>&1 | tee "$OUT/gpu-train-families-test.log"
timeout 300 python3 -m benchmarks.gpu_train_families lora --out "$OUT" 2>&1 | tee "$OUT/gpu_train_lora.log"
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  timeout 150 accelerate launch --multi_gpu --num_processes "$GPUS" --mixed_precision bf16 -m benchmarks.gpu_train_families sharding --tag ddp --out "$OUT" 2>&1 | tee "$OUT/gpu_train_ddp.log"
  timeout 150 accelerate launch --config_file examples/accelerate/fsdp.yaml --num_processes "$GPUS" -m benchmarks.gpu_train_families sharding --tag fsdp --out "$OUT" 2>&1 | tee "$OUT/gpu_train_fsdp.log"
else
  echo "FSDP vs DDP memory per GPU needs 2 or more GPUs; this machine has $GPUS" | tee "$OUT/gpu_train_sharding.log"
fi
