"""Does a model's result on a region depend on how much image lies around it?

    python benchmarks/size.py [--model PATH] [--sizes 256 512 1024 2048]

A generator with InstanceNorm normalises each layer with the statistics of the whole image it is
given. The bundled model was trained on 128² crops, whose statistics include their borders; a
large frame's do not. For each image below (2048², simulated) this denoises centred crops of
each size with ``denoise`` and prints the PSNR of the same central 256² region against the
truth (after an affine intensity match, as :mod:`napari_emdenoise.metrics`), so a figure that
falls with the size is the model's size dependence, measured in one run on this machine.
"""

from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_emdenoise import denoise
from napari_emdenoise.inference import DenoiseWarning
from napari_emdenoise.metrics import align
from napari_emdenoise.scenes import make_scene
from napari_emdenoise.simulate import simulate

FULL = 2048
CENTRE = 256


def images():
    yield "square 8 px, on the pixel grid, 5 counts/px", (s := simulate(size=FULL, period=8, dose=5, seed=1, dents=0)).noisy, s.clean
    yield "square 8.3 px, 5 counts/px", (s := simulate(size=FULL, period=8.3, dose=5, seed=1, dents=0)).noisy, s.clean
    yield "square 12 px, 5 counts/px", (s := simulate(size=FULL, period=12, dose=5, seed=1, dents=0)).noisy, s.clean
    yield "SrTiO3 vacancies 10 px, 3 counts/px", (s := make_scene(kind="vacancies", size=FULL, period=10, dose=3, seed=77)).noisy, s.expected


def psnr(out: np.ndarray, truth: np.ndarray) -> float:
    out = align(out.astype(np.float64), truth.astype(np.float64))
    return float(10 * np.log10(np.ptp(truth) ** 2 / np.mean((out - truth) ** 2)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="a generator (default: the bundled one)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", DenoiseWarning)
    sizes = [s for s in args.sizes if CENTRE <= s <= FULL]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"model: {args.model or 'bundled'}; PSNR dB of the central {CENTRE}² region, denoised within a centred crop of:")
    print("| image | " + " | ".join(f"{s}²" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    c = FULL // 2
    centre = np.s_[c - CENTRE // 2:c + CENTRE // 2, c - CENTRE // 2:c + CENTRE // 2]
    for name, noisy, truth in images():
        row = []
        for s in sizes:
            crop = np.s_[c - s // 2:c + s // 2, c - s // 2:c + s // 2]
            out = denoise(noisy[crop], None if args.model is None else str(args.model))
            inner = np.s_[s // 2 - CENTRE // 2:s // 2 + CENTRE // 2, s // 2 - CENTRE // 2:s // 2 + CENTRE // 2]
            row.append(psnr(out[inner], truth[centre]))
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
