#!/usr/bin/env bash
# Issue 26's device work, after run.sh in the same session: steer on SDXL-size and Flux-size random-weight models
# (bf16), steer vs stock and SVDD-PM's cost against M, plus the families' GPU tests. Logs and results under $OUT.
#   bash benchmarks/gpu/families.sh            (OUT defaults to out/gpu)
source "$(dirname "$0")/setup.sh"
timeout 120 python3 -m pytest tests/test_gpu_families.py -m gpu -q -rfE -p no:cacheprovider 2>&1 | tee "$OUT/gpu-families-test.log"
timeout 420 python3 -m benchmarks.gpu_families --out "$OUT" 2>&1 | tee "$OUT/gpu_families.log"
# issue 28 on one GPU: gen generate's images per second on the digits zoo model (larger batches than on a CPU)
timeout 120 python3 -m benchmarks.generate --items 1024 --batch-size 256 --steps 20 --repeats 2 --out "$OUT/generate" 2>&1 | grep -v "generate:" | tee "$OUT/generate.log"
