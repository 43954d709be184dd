"""The quality benchmark behind ``emdenoise bench``: our model against classical denoisers.

A fixed simulated suite (square and hexagonal lattices, periods 6-30 px, doses 1.5-20
counts/px, half with a dent, one seed per image) is denoised by each method and scored by
:mod:`napari_emdenoise.metrics` against the truth:

* ``noisy`` — the input itself;
* ``gaussian`` — a Gaussian filter with the best sigma for each image (chosen against the
  truth: an upper bound for that filter);
* ``nlm`` — non-local means (scikit-image) with h = 0.8 sigma, sigma the shot noise of the
  mean count (the images are electron counts);
* ``bm3d`` — BM3D (the ``bm3d`` package, when installed) on the Anscombe-transformed counts;
* ``fourier`` — Bragg filtering: keep the lattice reflections and the low frequencies
  (which carry the dent), drop the rest;
* ``model`` — the bundled default model, and any checkpoint passed as ``extra``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy import ndimage

from .inference import denoise, resolve_model
from .jobs import Event, Job, thread_warnings
from .lattice import estimate_period
from .metrics import Scores, psnr, score
from .simulate import SimResult, simulate

SUITE = [  # lattice, period px, dose, dent
    ("square", 6, 4, 1), ("hexagonal", 6, 10, 0), ("square", 10, 2, 1), ("hexagonal", 10, 6, 0),
    ("square", 16, 3, 0), ("hexagonal", 16, 8, 1), ("square", 16, 20, 1), ("hexagonal", 24, 2, 1),
    ("square", 24, 5, 0), ("hexagonal", 30, 4, 1), ("square", 30, 12, 0), ("square", 12, 1.5, 1),
]
QUICK = [SUITE[2], SUITE[5], SUITE[8], SUITE[11]]


def suite(quick: bool = False) -> Iterator[tuple[str, SimResult, bool, float]]:
    """(name, simulated image, has a dent, period in px) for each image of the suite."""
    size = 256 if quick else 384
    for i, (lattice, period, dose, dent) in enumerate(QUICK if quick else SUITE):
        sim = simulate(size=(size, size), lattice=lattice, period=period, dose=dose, dents=dent, dent_depth=0.35,
                       dent_radius=0.23 * size, angle=11 * i, row_offset=0.3, seed=500 + SUITE.index((lattice, period, dose, dent)))
        yield f"{lattice} {period} px, dose {dose}{', dent' if dent else ''}", sim, bool(dent), float(period)


# --------------------------------------------------------------------------- classical methods
def gaussian_best(noisy: np.ndarray, truth: np.ndarray) -> np.ndarray:
    outs = [ndimage.gaussian_filter(noisy.astype(np.float64), s) for s in np.arange(0.5, 6.01, 0.25)]
    return outs[int(np.argmax([psnr(o, truth) for o in outs]))]


def nlm(noisy: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    x = noisy.astype(np.float64)
    sigma = float(np.sqrt(max(x.mean(), 1e-6)))  # shot noise of the mean count
    return denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)


def bm3d_anscombe(noisy: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    import bm3d

    a = 2.0 * np.sqrt(np.maximum(noisy.astype(np.float64), 0) + 3.0 / 8.0)  # Poisson -> unit variance
    d = bm3d.bm3d(a, sigma_psd=1.0)
    return np.maximum(d / 2.0, 0) ** 2 - 3.0 / 8.0  # algebraic inverse


def fourier(noisy: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    x = noisy.astype(np.float64)
    f = np.fft.fft2(x - x.mean())
    p = np.abs(f) ** 2
    est = estimate_period(x)
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.fftfreq(x.shape[1])[None, :]
    low = np.hypot(fy, fx) < (0.5 / est.period if est.found else 0.02)  # the dent and other slow variation
    peaks = (p == ndimage.maximum_filter(p, size=5)) & (p > 30 * np.median(p))
    keep = ndimage.binary_dilation(peaks, iterations=1) | low
    return np.real(np.fft.ifft2(f * keep)) + x.mean()


def available_methods() -> dict[str, Callable]:
    methods = {"noisy": lambda n, t: n, "gaussian": gaussian_best, "nlm": nlm, "fourier": fourier}
    try:
        import bm3d  # noqa: F401

        methods["bm3d"] = bm3d_anscombe
    except ImportError:
        pass
    return methods


def iter_bench(quick: bool = False, extra: dict[str, str] | None = None) -> Job[tuple[list[dict], tuple | None]]:
    """A job (:mod:`.jobs`): score every method on every image, an :class:`Event` per (image, method).

    Returns one row per (image, method), and (image, {method: output}) of the first dented
    image for the figure.
    """
    methods = available_methods()
    models = {"model": resolve_model(None)}
    for name, path in (extra or {}).items():
        models[name] = resolve_model(path)
    total, done = len(QUICK if quick else SUITE) * (len(methods) + len(models)), 0
    rows, figure = [], None
    for name, sim, has_dent, period in suite(quick):  # one image at a time: the suite is simulated as it is scored
        outputs = {}
        for method, fn in list(methods.items()) + [(m, None) for m in models]:
            t0 = time.perf_counter()
            if fn is None:
                with thread_warnings(None):
                    out = denoise(sim.noisy, models[method])
            else:
                out = fn(sim.noisy, sim.clean)
            seconds = time.perf_counter() - t0
            s: Scores = score(np.asarray(out, dtype=np.float64), sim.clean, sim.dent if has_dent else None, period)
            rows.append({"image": name, "method": method, **s.to_dict(), "seconds": seconds})
            outputs[method] = out
            done += 1
            yield Event(done, total, "bench", f"{name}: {method}")
        if has_dent and figure is None:
            figure = (sim, outputs)
    return rows, figure


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def summary(rows: list[dict]) -> list[dict]:
    """Per method: mean PSNR/SSIM, worst F1, worst dent error, mean seconds."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        dents = [r["dent_error"] for r in rs if r["dent_error"] is not None]
        out.append({
            "method": method, "psnr": float(np.mean([r["psnr"] for r in rs])), "ssim": float(np.mean([r["ssim"] for r in rs])),
            "f1_min": float(min(r["f1"] for r in rs)), "dent_error_max": float(max(dents)) if dents else None,
            "seconds": float(np.mean([r["seconds"] for r in rs])),
        })
    return out



def markdown_table(summ: list[dict]) -> str:
    """The :func:`summary` rows as the Markdown table the README and model card show."""
    lines = ["| method | mean PSNR dB | mean SSIM | min column F1 | max dent error | s per image |",
             "|---|---|---|---|---|---|"]
    for r in summ:
        dent = "-" if r["dent_error_max"] is None else f"{r['dent_error_max']:.3f}"
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['f1_min']:.3f} | {dent} | {r['seconds']:.2f} |")
    return "\n".join(lines)

def side_by_side(panels: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """A PNG of equally scaled crops with a caption over each."""
    from PIL import Image, ImageDraw

    tiles = []
    for caption, img in panels:
        lo, hi = np.percentile(img, [0.5, 99.5])
        grey = (np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
        tile = Image.new("L", (grey.shape[1], grey.shape[0] + 22), 255)
        tile.paste(Image.fromarray(grey), (0, 22))
        ImageDraw.Draw(tile).text((4, 5), caption, fill=0)
        tiles.append(tile)
    gap = 6
    out = Image.new("L", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), tiles[0].height), 255)
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + gap
    out.save(path)
    return path
