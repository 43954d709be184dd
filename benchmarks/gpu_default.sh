#!/usr/bin/env bash
# The default model's training run on a lent GPU, as one script (the machine has no network: the
# package runs from src/ with the machine's own torch, numpy, scipy, scikit-image, tifffile,
# safetensors and tqdm; ase travels as a wheel in .whl/).
#   bash benchmarks/gpu_default.sh OUT_DIR [DEADLINE_SECONDS [N_SCENES]]
# 1. `emdenoise scenes`: N_SCENES (default 800) varied 384^2 training scenes, 16 processes.
# VARIANTS="residual" SHARE=0.95 PERIODS="5 32" trains the residual recipe alone over periods 5-32 px.
# 2. a 200-iteration probe of the recipe's speed, then two trainings side by side on the one GPU,
#    the recipe of models/make_default.sh (paired L1, resnet_6blocks ngf 32, linear output, input
#    clip 8, no resampling) and the same with a global residual (--residual), each with the
#    iteration count the probe says fits before DEADLINE_SECONDS (default 500) after the start.
#    A run still going at the deadline is stopped like Ctrl-C (the last 500-iteration checkpoint stays).
# -> OUT_DIR/{linear,residual}.safetensors, OUT_DIR/{linear,residual}_loss.csv, OUT_DIR/config.json
set -uo pipefail
out=${1:?usage: gpu_default.sh OUT_DIR [DEADLINE_SECONDS [N_SCENES]]}
deadline=${2:-500}
n=${3:-800}
source "$(dirname "$0")/gpu_env.sh"
work=${WORK:-$(mktemp -d)}
device=${DEVICE:-cuda}
variants=(${VARIANTS:-linear residual})
recipe=(--mode paired --model small --ngf 32 --final linear --clip 8 --no-rescale --crop 128 --batch-size 24 --lr 1e-3
        --seed 0 --device "$device")

stamp "environment"
nvidia-smi -L 2>/dev/null
python3 -c "import torch, ase; print('torch', torch.__version__, 'ase', ase.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" || exit 1

stamp "training data"
emdenoise scenes -o "$work/data" --n "$n" --seed 0 --size 384 --period-range ${PERIODS:-6 24} --jobs ${JOBS:-16} || exit 1

stamp "probe"
rate=$(python3 - "$work/data" "$device" "${PROBE:-200}" <<'PY'
import glob, sys, tempfile
import numpy as np, tifffile
from napari_emdenoise.nets import GeneratorConfig
from napari_emdenoise.train import TrainConfig, train
names = sorted(glob.glob(f"{sys.argv[1]}/noisy/*.tif"))[::16]
noisy = [tifffile.imread(n).astype(np.float32) for n in names]
clean = [tifffile.imread(n.replace("/noisy/", "/clean/")).astype(np.float32) for n in names]
cfg = TrainConfig.from_preset("small", mode="paired", generator=GeneratorConfig("resnet_6blocks", ngf=32, final="linear"), iterations=int(sys.argv[3]),
                              crop=128, batch_size=24, lr=1e-3, device=sys.argv[2], preview_every=0, clip=8.0, rescale=False,
                              period_range=(6.0, 24.0), checkpoint_every=10**9)
with tempfile.TemporaryDirectory() as tmp:
    ev = list(train(noisy, clean, tmp, cfg))
k = len(ev) // 4
print((len(ev) - 1 - k) / (ev[-1].elapsed - ev[k].elapsed))
PY
) || rate=20
load=60  # seconds for each run to read and prepare the scenes, and to checkpoint
left=$(( deadline - SECONDS - load ))
share=${SHARE:-0.6}  # each run's share of the probe's speed when two run side by side (0.63 was seen on an H200)
iters=$(python3 -c "print(max(500, int($left * $rate * $share / 500) * 500))")
stamp "probe $rate it/s alone -> $iters iterations for each of ${#variants[@]} run(s)"

for variant in "${variants[@]}"; do
  extra=(); [[ $variant == residual ]] && extra=(--residual)
  timeout -s INT $(( deadline - SECONDS )) emdenoise train --noisy "$work/data/noisy" --clean "$work/data/clean" -o "$work/$variant" \
    "${recipe[@]}" "${extra[@]}" --iters "$iters" --checkpoint-every 500 > "$work/${variant}_train.txt" 2>&1 &
done
wait
stamp "trained"
for variant in "${variants[@]}"; do
  tail -c 600 "$work/${variant}_train.txt"; echo
  cp "$work/$variant/denoiser.safetensors" "$out/$variant.safetensors"
  cp "$work/$variant/loss_log.csv" "$out/${variant}_loss.csv"
done
cp "$work/${variants[0]}/config.json" "$out/config.json"
stamp "done"
