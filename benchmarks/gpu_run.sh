#!/usr/bin/env bash
# One GPU session's work, as one script (a lent GPU machine has no network: the package runs
# from src/ with the machine's own torch, numpy, scipy, scikit-image, tifffile, safetensors, tqdm).
#   bash benchmarks/gpu_run.sh OUT_DIR [TRAIN_SECONDS [DEADLINE_SECONDS]]
# 1. the default model's recipe (models/make_default.sh) on the GPU with batches of 32, its
#    iteration count chosen from a 250-iteration probe so that training takes about TRAIN_SECONDS
#    (less if DEADLINE_SECONDS after the start, default 560, would not leave time for steps 2-3)
#    -> OUT_DIR/denoiser.safetensors, loss_log.csv, loss.png, config.json. If training runs late
#    it is interrupted like Ctrl-C, which keeps a checkpoint.
# 2. tests/test_cuda.py (CUDA vs CPU, mixed vs fp32, tiles vs whole on the GPU)  -> OUT_DIR/cuda_tests.txt
#    CUDA inference figures (fp32 vs mixed precision, 4096^2, tiled and whole) -> OUT_DIR/inference.md
# 3. CUDA training figures (fp32 vs bf16, both presets and modes)               -> OUT_DIR/training.md
set -uo pipefail
out=${1:?usage: gpu_run.sh OUT_DIR [TRAIN_SECONDS [DEADLINE_SECONDS]]}
budget=${2:-270}
deadline=${3:-560}
reserve=150  # seconds kept for steps 2 and 3
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
bin=$(mktemp -d)
printf '#!/bin/sh\nexec python3 -m napari_emdenoise.cli "$@"\n' > "$bin/emdenoise" && chmod +x "$bin/emdenoise"
export PATH="$bin:$PATH"
stamp() { echo "== $(date +%T) +${SECONDS}s $*"; }

stamp "environment"
nvidia-smi -L
python3 -c "import torch, napari_emdenoise.inference as i; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
work=$(mktemp -d)

stamp "training data"
sed '/^emdenoise train/,$d' "$root/src/napari_emdenoise/models/make_default.sh" > "$work/simulate.sh"
JOBS=16 bash "$work/simulate.sh" "$work" || exit 1
ls "$work/data/noisy" | wc -l

stamp "probe"
rate=$(python3 - "$work/data" <<'PY'
import glob, sys, tempfile
import numpy as np, tifffile
from napari_emdenoise.nets import GeneratorConfig
from napari_emdenoise.train import TrainConfig, train
names = sorted(glob.glob(f"{sys.argv[1]}/noisy/*.tif"))[::12]
noisy = [tifffile.imread(n).astype(np.float32) for n in names]
clean = [tifffile.imread(n.replace("/noisy/", "/clean/")).astype(np.float32) for n in names]
cfg = TrainConfig.from_preset("small", mode="paired", generator=GeneratorConfig("resnet_6blocks", ngf=32), iterations=250,
                              crop=96, batch_size=32, lr=1e-3, device="cuda", preview_every=0,
                              checkpoint_every=10**9)
with tempfile.TemporaryDirectory() as tmp:
    ev = list(train(noisy, clean, tmp, cfg))
print(200 / (ev[-1].elapsed - ev[49].elapsed))
PY
) || rate=20
prep=70  # seconds to load and resample the 200 images, and checkpoints
left=$(( deadline - SECONDS - reserve - prep ))
seconds=$(( left < budget ? left : budget ))
iters=$(python3 -c "print(max(1000, int($seconds * $rate / 1000) * 1000))")
stamp "default model: probe $rate it/s -> $iters iterations in about $seconds s"
timeout -s INT $(( deadline - SECONDS - reserve + 30 )) bash "$root/src/napari_emdenoise/models/make_default.sh" "$work" \
  "$iters" --device cuda --batch-size 32
cp "$work/run/denoiser.safetensors" "$work/run/loss_log.csv" "$work/run/loss.png" "$work/run/config.json" "$out/"

stamp "CUDA tests"
timeout 120 python3 -m pytest -q -s -p no:cacheprovider "$root/tests/test_cuda.py" 2>&1 | tee "$out/cuda_tests.txt"

stamp "inference figures"
timeout $(( deadline - SECONDS - 50 )) python3 "$root/benchmarks/inference.py" --devices cuda --models small resnet9 \
  --sizes 4096 | tee "$out/inference.md"

stamp "training figures"
timeout $(( deadline - SECONDS )) python3 "$root/benchmarks/training.py" --devices cuda --iters 30 \
  --precisions fp32 bf16 | tee "$out/training.md"
stamp "done"
