"""The published peer on the same suites: tk_r_em (Lobato et al., npj Comput Mater 2023).

    python benchmarks/peers.py [--quick] [--fidelity] [-o docs/bench] [--venv DIR]

With ``--fidelity`` it runs the fidelity benchmark of ``emdenoise bench --fidelity`` (specimen
scenes as uint16 detector data; noisy input, Gaussian, BM3D, the default model and tk_r_em,
which gets the raw detector values as a user would feed it) and writes fidelity.csv,
fidelity_summary.csv and fidelity.png.

tk_r_em ships pretrained TensorFlow SavedModels (GPL-3) for STEM/TEM/SEM restoration; its
``sfr_hrstem`` network is what a microscopist would pick instead of ours. It never enters this
package's dependencies, its tests or CI: this script makes its own virtual environment (default
~/.cache/napari-emdenoise/tk-r-em) with ``tk-r-em`` and ``tensorflow-cpu`` and runs the
network there, in a child process that imports nothing of ours. Keras 3 cannot open these
legacy SavedModels, so the child loads them with
``tf.saved_model.load(path).signatures["serving_default"]`` and feeds the raw image as
float32 of shape (1, H, W, 1), as the issue describes.

The parent (this package's environment) simulates the benchmark suite of ``emdenoise bench``,
runs the default model on the same images on the same machine, scores both with
``napari_emdenoise.metrics.score`` (intensity-aligned, so output scale does not matter) and
prints one table; with ``-o`` it writes peers.csv (per image) there too. Seconds per image
exclude loading either network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
import warnings
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np, tensorflow as tf
import tk_r_em, pathlib
path = pathlib.Path(tk_r_em.__file__).parent / "models" / sys.argv[3]
fn = tf.saved_model.load(str(path)).signatures["serving_default"]
key = list(fn.structured_input_signature[1])[0]
data = np.load(sys.argv[1])
outs, secs = {}, {}
for name in data.files:
    x = data[name].astype(np.float32)[None, :, :, None]
    fn(**{key: tf.constant(x[:, :64, :64])})  # build the graph once before timing
    t0 = time.perf_counter()
    y = list(fn(**{key: tf.constant(x)}).values())[0].numpy()
    secs[name] = time.perf_counter() - t0
    outs[name] = y[0, :, :, 0]
np.savez(sys.argv[2], **outs)
print(json.dumps({"seconds": secs, "tensorflow": tf.__version__}))
"""


def ensure_venv(where: Path) -> Path:
    py = where / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import tk_r_em, tensorflow"], capture_output=True, check=False).returncode == 0:
        return py
    print(f"making {where} with tk-r-em and tensorflow-cpu (a few hundred MB, once)", file=sys.stderr)
    venv.create(where, with_pip=True, clear=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "tk-r-em", "tensorflow-cpu"], check=True)
    return py


def main() -> int:
    import numpy as np

    from napari_emdenoise import denoise
    from napari_emdenoise.bench import markdown_table, suite, summary, write_csv
    from napari_emdenoise.inference import DenoiseWarning, resolve_model
    from napari_emdenoise.metrics import score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small suite of 'emdenoise bench --quick'")
    p.add_argument("-o", "--out", type=Path, default=None, help="folder for peers.csv")
    p.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "napari-emdenoise" / "tk-r-em")
    p.add_argument("--network", default="sfr_hrstem", help="tk_r_em network name")
    p.add_argument("--fidelity", action="store_true", help="the fidelity benchmark (specimen scenes) instead")
    args = p.parse_args()

    py = ensure_venv(args.venv)
    if args.fidelity:
        return fidelity_main(args, py)
    images = list(suite(args.quick))
    try:
        peer, child = run_peer(py, {f"i{k}": sim.noisy for k, (_, sim, _, _) in enumerate(images)}, args.network)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    net = resolve_model(None)
    rows = []
    for k, (name, sim, has_dent, period) in enumerate(images):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DenoiseWarning)  # "resampled to the model's period"
            ours = denoise(sim.noisy, net)
        ours_s = time.perf_counter() - t0
        for method, out, secs in (("noisy", sim.noisy, 0.0), (f"tk_r_em {args.network}", peer[f"i{k}"], child["seconds"][f"i{k}"]),
                                  ("model", ours, ours_s)):
            s = score(np.asarray(out, dtype=np.float64), sim.clean, sim.dent if has_dent else None, period)
            rows.append({"image": name, "method": method, **s.to_dict(), "seconds": secs})
            print(f"{name:32s} {method:22s} PSNR {s.psnr:6.2f}  F1 {s.f1:.3f}  {secs:6.2f} s", file=sys.stderr)
    import torch

    print(f"\nCPU: {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"tensorflow {child['tensorflow']}")
    print(markdown_table(summary(rows)))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"written to {write_csv(rows, args.out / 'peers.csv')}")
    return 0


def run_peer(py: Path, images: dict, network: str) -> tuple[dict, dict]:
    """tk_r_em on each named image in its own environment: outputs and seconds per image."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **images)
        proc = subprocess.run([py, "-c", CHILD, Path(tmp) / "in.npz", Path(tmp) / "out.npz", network],
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        return dict(np.load(Path(tmp) / "out.npz")), child


def fidelity_main(args, py: Path) -> int:
    import numpy as np
    import torch

    from napari_emdenoise import fidelity
    from napari_emdenoise.jobs import drive

    scenes = list(fidelity.suite(args.quick))
    try:
        peer, child = run_peer(py, {f"i{k}": s.noisy.astype(np.float32) for k, (_, s) in enumerate(scenes)}, args.network)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    key = {s.params.seed: f"i{k}" for k, (_, s) in enumerate(scenes)}  # scene -> its name in the peer's files
    name = f"tk_r_em {args.network}"

    def tk_r_em(scene):
        return peer[key[scene.params.seed]]

    methods = fidelity.classical_methods()
    methods[name] = tk_r_em
    methods.update(fidelity.model_methods("model", None))
    run = drive(fidelity.iter_fidelity(methods, args.quick), lambda e: print(e.message, file=sys.stderr))
    by_name = {n: key[s.params.seed] for n, s in scenes}
    for row in run.rows:  # the peer's time is its own network's, measured in its process
        if row["method"] == name:
            row["seconds"] = child["seconds"][by_name[row["scene"]]]
    summ = fidelity.write_report(run, args.out) if args.out else fidelity.summary(run.rows)
    print(f"\nCPU: {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"tensorflow {child['tensorflow']}")
    print(fidelity.markdown_table(summ))
    if args.out:
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
