"""Quality of a denoised image against the truth: what a microscopist would check.

Every score compares ``output`` with ``truth`` after aligning the output's intensities to
the truth's by a least-squares affine map (a*output + b), so a method is not penalised for
an overall scale or offset.

* ``psnr`` — dB, with the truth's value range as the peak;
* ``ssim`` — structural similarity (scikit-image), same range;
* ``f1`` / ``rms_px`` — atom columns: one peak detector on truth and output, a detected
  column counts as found when it lies within 0.3 of the nearest-neighbour distance of a
  true one (one-to-one); F1 of that matching and the RMS position error of matched pairs;
* ``dent_error`` — relative error of the dent's low-pass contrast (mean outside over mean
  inside the dent, minus one): 0 when the output keeps the dent as deep as the truth,
  1 when it erased it. Needs the dent region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max
from skimage.metrics import structural_similarity

from .lattice import estimate_period


@dataclass(frozen=True)
class Scores:
    psnr: float
    ssim: float
    f1: float
    rms_px: float
    dent_error: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """One line for people: PSNR, SSIM, columns, and the dent when it was scored."""
        quality = "PSNR infinite (identical images)" if self.psnr == float("inf") else f"PSNR {self.psnr:.2f} dB"
        place = "no column matched" if np.isnan(self.rms_px) else f"RMS {self.rms_px:.2f} px"
        line = f"{quality}, SSIM {self.ssim:.3f}, columns F1 {self.f1:.3f} ({place})"
        return line + (f", dent error {self.dent_error:.3f}" if self.dent_error is not None else "")


def align(output: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``a * output + b`` closest to ``truth`` in the least-squares sense."""
    x = output.astype(np.float64).ravel()
    A = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, truth.astype(np.float64).ravel(), rcond=None)
    return (a * output + b).astype(np.float64)


IDENTICAL = 1e-10  # an RMS difference under this share of the range is rounding: PSNR infinite (float32 rounding is 6e-8)


def psnr(output: np.ndarray, truth: np.ndarray) -> float:
    t = truth.astype(np.float64)
    mse = float(np.mean((align(output, t) - t) ** 2))
    span = float(t.max() - t.min())
    # identical images: the least-squares match leaves float64 rounding (about 1e-15 of the range), not an error
    return float("inf") if mse <= (IDENTICAL * span) ** 2 else 10.0 * np.log10(span**2 / mse)


def ssim(output: np.ndarray, truth: np.ndarray) -> float:
    t = truth.astype(np.float64)
    return float(structural_similarity(align(output, t), t, data_range=float(t.max() - t.min())))


def find_columns(image: np.ndarray, period: float) -> np.ndarray:
    """Atom-column positions (row, col): maxima of the lightly smoothed image, at least a
    third of a period apart, standing out from their surroundings (local background removed)."""
    img = image.astype(np.float64)
    smooth = ndimage.gaussian_filter(img, sigma=max(0.5, period / 8))
    contrast = smooth - ndimage.gaussian_filter(img, sigma=period)
    peaks = peak_local_max(contrast, min_distance=max(1, int(round(period / 3))), exclude_border=False,
                           threshold_abs=0.25 * float(contrast.std()))
    return peaks.astype(np.float64)


def match_columns(found: np.ndarray, true: np.ndarray, radius: float) -> tuple[float, float]:
    """F1 of a one-to-one matching within ``radius``, and the RMS distance of matched pairs."""
    if len(found) == 0 or len(true) == 0:
        return (1.0, 0.0) if len(found) == len(true) else (0.0, float("nan"))
    tree = cKDTree(true)
    pairs = tree.sparse_distance_matrix(cKDTree(found), radius).tocoo()
    if pairs.nnz == 0:
        return 0.0, float("nan")
    cost = np.full((len(true), len(found)), 1e9)
    cost[pairs.row, pairs.col] = pairs.data
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= radius
    tp = int(ok.sum())
    precision, recall = tp / len(found), tp / len(true)
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    rms = float(np.sqrt(np.mean(cost[rows, cols][ok] ** 2))) if tp else float("nan")
    return f1, rms


def dent_contrast(image: np.ndarray, dent: np.ndarray, period: float) -> float:
    """Low-pass contrast of the dent: mean outside over mean inside, minus one."""
    low = ndimage.gaussian_filter(image.astype(np.float64), sigma=period, mode="reflect")
    inside, outside = dent > 0.9, dent < 0.05
    if not inside.any() or not outside.any():
        raise ValueError("the dent map needs both a dent (> 0.9) and untouched specimen (< 0.05)")
    return float(low[outside].mean() / low[inside].mean() - 1.0)


def score(output: np.ndarray, truth: np.ndarray, dent: np.ndarray | None = None, period: float | None = None) -> Scores:
    """All scores of ``output`` against ``truth`` (2D arrays of one shape)."""
    if output.shape != truth.shape or output.ndim != 2:
        raise ValueError(f"output {output.shape} and truth {truth.shape} must be 2D images of the same shape")
    for what, image in (("output", output), ("truth", truth)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(f"the {what} has {bad} NaN or infinite pixels; crop them away or fill them before scoring")
    if period is None:
        est = estimate_period(truth)
        if not est.found:
            raise ValueError("no lattice found in the truth image; pass its period")
        period = est.period
    aligned = align(output, truth)
    true_cols = find_columns(truth, period)
    nn = np.median(cKDTree(true_cols).query(true_cols, k=2)[0][:, 1]) if len(true_cols) > 2 else period
    f1, rms = match_columns(find_columns(aligned, period), true_cols, 0.3 * nn)
    dent_error = None
    if dent is not None and (dent > 0.9).any():
        c_true = dent_contrast(truth, dent, period)
        dent_error = abs(dent_contrast(aligned, dent, period) - c_true) / abs(c_true)
    return Scores(psnr(output, truth), ssim(output, truth), f1, rms, dent_error)
