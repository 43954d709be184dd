# Sourced by the GPU scripts (gpu_session.sh, gpu_default.sh) after they set $out: the package from src/ with the
# machine's own torch and friends (a lent GPU machine has no network; ase travels as a wheel in .whl/), an
# `emdenoise` command on PATH, and stamp() for timed log lines.
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
if ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$root"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore OMP_NUM_THREADS=4
bin=$(mktemp -d)
printf '#!/bin/sh\nexec python3 -m napari_emdenoise.cli "$@"\n' > "$bin/emdenoise" && chmod +x "$bin/emdenoise"
export PATH="$bin:$PATH"
stamp() { echo "== $(date +%T) +${SECONDS}s $*"; }
