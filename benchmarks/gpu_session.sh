#!/usr/bin/env bash
# One lent GPU's call, as one script (the machine has no network: the package runs from src/ with the
# machine's own torch, numpy, scipy, scikit-image, tifffile, safetensors and tqdm; ase travels as a
# wheel in .whl/).
#   bash benchmarks/gpu_session.sh OUT_DIR [DEADLINE_SECONDS]
# Each step is stopped like Ctrl-C if it would pass its share of DEADLINE_SECONDS (default 540):
# 1. first, on the quiet GPU: tests/test_cuda.py and benchmarks/inference.py on CUDA (the acceptance ratios of
#    issue 13 on 4096² images and stacks of 32 x 1024² with every default, then the tables, the profile of
#    benchmarks/profile_device.py, torch.compile last), at most CUDA_S seconds (default 300: on an H200 the figures
#    before the profile took 195 s) -> OUT_DIR/cuda.txt, profile.txt
# 2. then side by side on the one GPU:
#    a. the default model's recipe (src/napari_emdenoise/models/make_default.sh) on 1200 scenes (KINDS sets the
#       shares), paired L1, residual resnet_6blocks ngf 32, its iteration count from a 200-iteration probe taken
#       while b. runs; DEFAULT_ARGS go to emdenoise train (e.g. '--init bundled --crop 256 --batch-size 12
#       --lr 3e-4' continues the bundled model on larger crops; CROP and BATCH then set the probe's)
#       -> OUT_DIR/default.safetensors (float32), default_loss.csv, default_train.txt, default_selection.json
#    b. benchmarks/training_fidelity.py, GPU-sized, for the recommended modes (fine-tune, self-supervised)
#       -> OUT_DIR/training_fidelity.md (the table), training_fidelity.log
# Everything printed also goes to OUT_DIR/session.log.
set -uo pipefail
out=${1:?usage: gpu_session.sh OUT_DIR [DEADLINE_SECONDS]}
deadline=${2:-540}
source "$(dirname "$0")/gpu_env.sh"
exec > >(tee "$out/session.log") 2>&1
left() { local s=$(( $1 - SECONDS )); echo $(( s > 20 ? s : 20 )); }  # seconds until a deadline, never below 20
work=${WORK:-$(mktemp -d)}
device=${DEVICE:-cuda}
n=${SCENES:-1200}
cuda_end=$(( SECONDS + ${CUDA_S:-300} ))

stamp "environment"
nvidia-smi -L 2>/dev/null
python3 -c "import torch, ase; print('torch', torch.__version__, 'ase', ase.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" || exit 1

stamp "CUDA tests and inference figures"
{ timeout 60 python3 -m pytest -q -p no:cacheprovider "$root/tests/test_cuda.py" 2>&1 | tail -5
  # the acceptance figures first (each a ratio in one process), then the tables, compile last: what the deadline cuts
  # is what matters least
  timeout $(left $cuda_end) python3 "$root/benchmarks/inference.py" --defaults --devices "$device" --sizes 4096
  timeout $(left $cuda_end) python3 "$root/benchmarks/inference.py" --defaults --devices "$device" --sizes 1024 --frames 32
  timeout $(left $cuda_end) python3 "$root/benchmarks/inference.py" --devices "$device" \
    --models small resnet9 --sizes 4096
  timeout $(left $cuda_end) python3 "$root/benchmarks/inference.py" --devices "$device" \
    --models small --frames 32 --sizes 1024
  # where the time goes, each step of a plane apart (benchmarks/profile_device.py; its tables in profile.txt)
  timeout $(left $cuda_end) python3 "$root/benchmarks/profile_device.py" --device "$device" --top 20 2>&1 \
    | grep -v USDT > "$out/profile.txt"
  timeout $(left $cuda_end) python3 "$root/benchmarks/inference.py" --devices "$device" --models small --sizes 4096 --compile
  } 2>&1 | tee "$out/cuda.txt"

stamp "training fidelity (background)"
timeout -s INT $(left $deadline) python3 "$root/benchmarks/training_fidelity.py" --device "$device" \
  --modes fine-tune self-supervised ${TF_ARGS:-} > "$out/training_fidelity.md" 2> "$out/training_fidelity.log" &
tf=$!

stamp "default model: training data"
emdenoise scenes -o "$work/data" --n "$n" --seed 0 --size 384 --period-range 6 24 --jobs ${JOBS:-12} \
  --kinds ${KINDS:-vacancies=0.16 dopants=0.18 columns=0.13 amorphous=0.1 particle=0.1 interface=0.07 scan=0.06 lattice=0.2} || exit 1

stamp "default model: probe"
rate=$(python3 - "$work/data" "$device" "${PROBE:-200}" "${CROP:-128}" "${BATCH:-24}" <<'PY'
import glob, sys, tempfile
import numpy as np, tifffile
from napari_emdenoise.nets import GeneratorConfig
from napari_emdenoise.train import TrainConfig, train
names = sorted(glob.glob(f"{sys.argv[1]}/noisy/*.tif"))[::16]
noisy = [tifffile.imread(n).astype(np.float32) for n in names]
clean = [tifffile.imread(n.replace("/noisy/", "/clean/")).astype(np.float32) for n in names]
cfg = TrainConfig.from_preset("small", mode="paired", generator=GeneratorConfig("resnet_6blocks", ngf=32, final="linear", residual=True),
                              iterations=int(sys.argv[3]), crop=int(sys.argv[4]), batch_size=int(sys.argv[5]), lr=1e-3,
                              device=sys.argv[2], preview_every=0, clip=8.0, rescale=False, period_range=(6.0, 24.0),
                              checkpoint_every=10**9, lambda_consistency=0.0)
with tempfile.TemporaryDirectory() as tmp:
    ev = [e for e in train(noisy, clean, tmp, cfg) if e.stage == "train"]
k = len(ev) // 4
print((len(ev) - 1 - k) / (ev[-1].elapsed - ev[k].elapsed))
PY
) || rate=20
load=60  # seconds to read the scenes, to checkpoint and to select
iters=$(python3 -c "print(max(500, int(($deadline - $SECONDS - $load) * $rate * ${SHARE:-0.95} / 500) * 500))")
stamp "default model: probe $rate it/s -> $iters iterations"
SHIP="$work/default_f16.safetensors" timeout -s INT $(left $deadline) bash "$root/src/napari_emdenoise/models/make_default.sh" \
  "$work" "$iters" --device "$device" --no-report ${DEFAULT_ARGS:-} > "$out/default_train.txt" 2>&1
stamp "default model trained"
tail -c 800 "$out/default_train.txt"; echo
cp "$work/run/denoiser.safetensors" "$out/default.safetensors"
cp "$work/run/loss_log.csv" "$out/default_loss.csv"
cp "$work/run/selection.json" "$out/default_selection.json" 2>/dev/null
wait $tf
stamp "training fidelity done"
cat "$out/training_fidelity.md"; tail -c 1500 "$out/training_fidelity.log"
stamp "done"
