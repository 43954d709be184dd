#!/usr/bin/env bash
# Reproduces models/default.safetensors with the public CLI (see docs/model_card.md).
#   bash src/napari_emdenoise/models/make_default.sh WORK_DIR [ITERATIONS [extra train options]]
# 1200 specimen scenes of 384^2 px from 'emdenoise scenes' (seed 0; every kind of the fidelity
# benchmark's simulator, periods 6-24 px, doses 0.8-40 counts/px, optics, scan and detector all
# varied; the benchmark's seeds 9000-9999 are refused), then paired L1 training of a residual
# resnet_6blocks generator of width 32 with a linear output, the input clipped at 8 (so heavy
# dopants are not), on every scene at its own scale (no resampling: the model records the period
# range it saw). Extra options go to 'emdenoise train' and win over the recipe's, e.g.
# '--device cuda'. JOBS=N simulates N scenes at a time (default 4); a second run in the same
# WORK_DIR reuses the data. --no-select: the recipe ends with its last iteration, as when the shipped model was
# made (checkpoint selection came later). The shipped model was made on an H200 with 13500 iterations
# (benchmarks/gpu_default.sh, the 'residual' run). SHIP=PATH writes the float16 weights there instead of
# over the bundled ones (the GPU session does, so runs beside it keep the bundled model).
set -euo pipefail
work=${1:?usage: make_default.sh WORK_DIR [ITERATIONS [extra train options]]}
iters=${2:-13500}
shift $(( $# < 2 ? $# : 2 ))
if [[ ! -f "$work/data/scenes.json" ]]; then
  emdenoise scenes -o "$work/data" --n 1200 --seed 0 --size 384 --period-range 6 24 --jobs "${JOBS:-4}" --overwrite
fi
emdenoise train --mode paired --noisy "$work/data/noisy" --clean "$work/data/clean" -o "$work/run" \
  --model small --ngf 32 --final linear --residual --clip 8 --no-rescale --iters "$iters" --crop 128 --batch-size 24 \
  --lr 1e-3 --consistency 0 --checkpoint-every 500 --seed 0 --no-select "$@"
# ship the weights as float16 (half the size; outputs within about 1e-4 of the output range)
"${PYTHON:-python3}" -c 'import sys; from napari_emdenoise.checkpoints import load_checkpoint, save_generator
net, info = load_checkpoint(sys.argv[1]); save_generator(sys.argv[2], net, info, half=True)' \
  "$work/run/denoiser.safetensors" "${SHIP:-$(dirname "$0")/default.safetensors}"
