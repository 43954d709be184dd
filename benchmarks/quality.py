"""Denoising quality on a fixed simulated suite: a model against the noisy input and a Gaussian filter.

    python benchmarks/quality.py [--model PATH]     # default: the bundled model

12 images of 384² px: square and hexagonal lattices, periods 6, 10, 16, 24, 30 px, doses
2-20 counts/px, half with a dent, one seed each. Scores from ``napari_emdenoise.metrics``
(PSNR and SSIM after affine intensity alignment, atom-column F1 and RMS position error,
dent error). The Gaussian filter gets its best sigma per image (chosen against the truth,
so it is an upper bound for that filter). Prints a Markdown table and the means.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import ndimage

from napari_emdenoise.inference import DenoiseWarning, denoise, resolve_model
from napari_emdenoise.metrics import psnr, score
from napari_emdenoise.simulate import simulate

SUITE = [
    ("square", 6, 4, 1), ("hexagonal", 6, 10, 0), ("square", 10, 2, 1), ("hexagonal", 10, 6, 0),
    ("square", 16, 3, 0), ("hexagonal", 16, 8, 1), ("square", 16, 20, 1), ("hexagonal", 24, 2, 1),
    ("square", 24, 5, 0), ("hexagonal", 30, 4, 1), ("square", 30, 12, 0), ("square", 12, 1.5, 1),
]


def suite():
    for i, (lattice, period, dose, dents) in enumerate(SUITE):
        yield (lattice, period, dose, dents), simulate(size=(384, 384), lattice=lattice, period=period, dose=dose,
                                                      dents=dents, dent_depth=0.35, dent_radius=90, angle=11 * i,
                                                      row_offset=0.3, seed=500 + i)


def best_gaussian(noisy, truth):
    sigmas = np.arange(0.5, 6.01, 0.25)
    outs = [ndimage.gaussian_filter(noisy.astype(np.float64), s) for s in sigmas]
    k = int(np.argmax([psnr(o, truth) for o in outs]))
    return outs[k], float(sigmas[k])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    args = p.parse_args()
    net = resolve_model(args.model)
    rows = []
    print("| image | noisy PSNR | Gaussian PSNR (sigma) | model PSNR | model SSIM | model F1 | RMS px | dent error | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (lattice, period, dose, dents), sim in suite():
        dent = sim.dent if dents else None
        noisy = score(sim.noisy, sim.clean, dent, period)
        g, sigma = best_gaussian(sim.noisy, sim.clean)
        gauss = score(g, sim.clean, dent, period)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DenoiseWarning)
            out = denoise(sim.noisy, net)
        seconds = time.perf_counter() - t0
        model = score(out, sim.clean, dent, period)
        rows.append((noisy, gauss, model))
        dent_txt = f"{model.dent_error:.3f}" if model.dent_error is not None else "-"
        print(f"| {lattice} {period} px, dose {dose}{', dent' if dents else ''} | {noisy.psnr:.1f} | "
              f"{gauss.psnr:.1f} ({sigma:.2f}) | {model.psnr:.1f} | {model.ssim:.3f} | {model.f1:.3f} | "
              f"{model.rms_px:.2f} | {dent_txt} | {seconds:.1f} |")
    mean = lambda k, i: float(np.mean([getattr(r[i], k) for r in rows]))  # noqa: E731
    print(f"\nmean PSNR: noisy {mean('psnr', 0):.2f} dB, best Gaussian {mean('psnr', 1):.2f} dB, model {mean('psnr', 2):.2f} dB; "
          f"model F1 min {min(r[2].f1 for r in rows):.3f}; "
          f"dent error max {max(r[2].dent_error for r in rows if r[2].dent_error is not None):.3f}")


if __name__ == "__main__":
    main()
