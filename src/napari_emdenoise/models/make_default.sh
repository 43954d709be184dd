#!/usr/bin/env bash
# Reproduces models/default.safetensors with the public CLI (see docs/model_card.md).
#   bash src/napari_emdenoise/models/make_default.sh WORK_DIR [ITERATIONS]
# Simulated training pairs across the zoom and dose range a microscopist meets, then paired
# training of the small preset. On 1 CPU thread (OMP_NUM_THREADS=1) about 5 iterations/s.
set -euo pipefail
work=${1:?usage: make_default.sh WORK_DIR [ITERATIONS]}
iters=${2:-8000}
seed=100
for period in 5 8 12 16 24 32 40; do
  for dose in 2 6 15 30; do
    for lattice in square hexagonal; do
      emdenoise simulate -o "$work/data" --prefix "p${period}_d${dose}_${lattice}" --n 2 --size 384 \
        --lattice "$lattice" --period "$period" --dose "$dose" --dents 1 --dent-depth 0.35 \
        --angle $((seed % 45)) --row-offset 0.3 --seed "$seed" >/dev/null
      seed=$((seed + 10))
    done
  done
done
emdenoise train --mode paired --noisy "$work/data/noisy" --clean "$work/data/clean" -o "$work/run" \
  --model small --iters "$iters" --crop 96 --batch-size 4 --lr 1e-3 --checkpoint-every 1000 --seed 0
cp "$work/run/denoiser.safetensors" "$(dirname "$0")/default.safetensors"
