#!/usr/bin/env bash
# Train the zoo digits recipe with condition embedding perturbation (CEP), on 1 process, then on 2.
# Every option is visible; see `python -m gen.training.train --help` for the rest.
set -euo pipefail
OUT=${1:-out/examples/digits-cep}
COMMON=(--data digits --condition class --resolution 16 --block-out-channels 32,64,64 --layers-per-block 1
        --attention-levels 2 --train-batch-size 64 --learning-rate 3e-4 --lr-warmup-steps 100 --ema-decay 0.999
        --condition-dropout 0.1 --seed 0 --checkpointing-steps 200 --max-train-steps ${STEPS:-1000})

python -m gen.training.train "${COMMON[@]}" --cep gaussian --cep-gamma 1.0 --output-dir "$OUT"
# Interrupted? The same command with --resume latest continues bit-exactly.
# Two processes (gloo on CPU; on GPUs use `accelerate launch -m gen.training.train ...`):
torchrun --nproc_per_node 2 -m gen.training.train "${COMMON[@]}" --cep uniform --cep-gamma 1.0 --output-dir "$OUT-2proc"
gen sample "$OUT" --class-labels 0 1 2 3 4 5 6 7 8 9 --guidance 2 --out "$OUT" --name samples.png
