"""Cost of refitting column heights (refit_columns) against the denoising it follows, on this machine.

    python benchmarks/refit.py [--sizes 512 2048] [--repeat 2]

For simulated lattices (period 12 px, 5 counts/px, uint16 detector values) it prints the seconds
of ``denoise(image)`` with the bundled model (the baseline, measured in the same run), of
``refit_columns(image, result)``, and their ratio: what the widget's and the CLI's default
"column heights from the data" adds to a denoising.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch

from napari_emdenoise import denoise, refit_columns
from napari_emdenoise.inference import DenoiseWarning
from napari_emdenoise.simulate import simulate


def best(fn, repeat: int):
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", DenoiseWarning)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"best of {args.repeat}")
    print("| image | denoise s | refit s | refit / denoise | columns |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        noisy = simulate(size=size, period=12, dose=5, seed=1).noisy
        t_d, out = best(lambda: denoise(noisy), args.repeat)
        t_r, fit = best(lambda: refit_columns(noisy, out), args.repeat)
        print(f"| {size}² | {t_d:.2f} | {t_r:.2f} | {t_r / t_d:.2f} | {fit.columns} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
