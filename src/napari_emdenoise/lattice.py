"""Lattice-period estimate from the image's Fourier transform, and resampling to a model's scale.

"Period" here is the spacing, in pixels, of the lattice planes of the strongest Bragg
reflection below the Nyquist limit: for a square lattice that is the lattice constant;
for a hexagonal lattice of constant a it is a*sqrt(3)/2. Models record the period of
their training data measured by this same estimator, so matching the two numbers
matches the scale whatever the lattice.

A superstructure (an ordering, a moire, a modulation every few columns) can make a
long-period reflection the strongest. The columns' own lattice then still shows as a
strong reflection at a higher frequency that is not the sum of two stronger reflections
(harmonics of the lattice are such sums: (1,1) = (1,0) + (0,1), (2,0) = (1,0) + (1,0)).
When there is one, with at least a fifth of the strongest power, the highest-frequency
such reflection gives the period instead: the spacing of the columns, not of the
superstructure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MIN_PERIOD = 2.5  # px; below this columns are not resolved
MAX_PERIOD = 128.0  # px; longer wavelengths are dents and gradients, not the lattice
MIN_CONTRAST = 100.0  # Bragg peak power over the median power at the same frequency (noise alone: ~20)


@dataclass(frozen=True)
class PeriodEstimate:
    period: float | None  # px, None when no clear lattice was found
    contrast: float  # peak power / median power at that spatial frequency
    angle: float  # direction of the reflection, degrees

    @property
    def found(self) -> bool:
        return self.period is not None


def _analysis_crop(image: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """A central crop no larger than max_side: enough periods, bounded cost on 8k images."""
    h, w = image.shape
    ch, cw = min(h, max_side), min(w, max_side)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return image[r0 : r0 + ch, c0 : c0 + cw]


def estimate_period(image: np.ndarray, min_period: float = MIN_PERIOD, max_period: float = MAX_PERIOD) -> PeriodEstimate:
    """Estimate the lattice period (px) of a 2D image from its strongest Bragg reflection."""
    if np.ndim(image) != 2:
        raise ValueError(f"estimate_period needs a 2D image, got shape {np.shape(image)}")
    img = _analysis_crop(np.asarray(image)).astype(np.float64)  # crop first: a 4096^2 frame costs what 1024^2 does
    finite = np.isfinite(img)
    if not finite.all():  # NaN/Inf pixels count as the whole image's median (computed only then)
        whole = np.asarray(image, dtype=np.float64)
        img = np.where(finite, img, np.nanmedian(whole) if np.isfinite(whole).any() else 0.0)
    h, w = img.shape
    if min(h, w) < 16 or img.std() == 0:
        return PeriodEstimate(None, 0.0, 0.0)
    # remove slow variation (dents, gradients) so it does not leak into the lattice frequencies: first a fitted plane
    # (a ramp's reflected borders would otherwise ring at long periods), then a broad Gaussian
    # (rows and columns of a full grid are orthogonal: the plane is the line fits of the row and column means)
    scale = float(np.abs(img).max())
    ry, rx = np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2
    img = img - img.mean() - np.outer(ry, np.ones(w)) * (ry @ img.mean(axis=1)) / (ry @ ry) \
        - np.outer(np.ones(h), rx) * (img.mean(axis=0) @ rx) / (rx @ rx)
    if img.std() <= 1e-9 * scale:  # a plane and nothing else
        return PeriodEstimate(None, 0.0, 0.0)
    low = _low_pass(img, max_period / 2)
    win = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fftshift(np.fft.fft2((img - low) * win))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    fr = np.hypot(fy, fx)
    band = (fr >= 1.0 / max_period) & (fr <= 1.0 / min_period)
    if min(h, w) < 2 * max_period:  # small image: at least 2 periods across
        band &= fr >= 2.0 / min(h, w)
    if not band.any():
        return PeriodEstimate(None, 0.0, 0.0)
    masked = np.where(band, power, 0.0)
    iy, ix = np.unravel_index(np.argmax(masked), masked.shape)
    iy, ix = _column_reflection(masked, power, band, fr, iy, ix, min(h, w))
    # contrast against the median power in a thin ring at the same frequency
    ring = band & (np.abs(fr - fr[iy, ix]) <= 1.5 / min(h, w))
    contrast = float(power[iy, ix] / max(np.median(power[ring]), 1e-30))
    # sub-pixel centre of the peak: power-weighted centroid in a 3x3 neighbourhood
    y0, y1, x0, x1 = max(iy - 1, 0), min(iy + 2, h), max(ix - 1, 0), min(ix + 2, w)
    pw = power[y0:y1, x0:x1]
    cfy = float((pw * fy[y0:y1, :]).sum() / pw.sum())
    cfx = float((pw * fx[:, x0:x1]).sum() / pw.sum())
    f = np.hypot(cfy, cfx)
    angle = float(np.degrees(np.arctan2(cfy, cfx)))
    if contrast < MIN_CONTRAST or f == 0:
        return PeriodEstimate(None, contrast, angle)
    return PeriodEstimate(float(1.0 / f), contrast, angle)


def _low_pass(img: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` px (reflected borders), computed on an image block-averaged by up to sigma / 8 and
    brought back linearly: what is left of the lattice after such a blur is smooth, and a direct blur of 1024^2 at
    sigma 64 took 0.27 s of the 0.34 s the whole estimate cost."""
    f = max(1, int(sigma // 8))
    if f == 1:
        return ndimage.gaussian_filter(img, sigma=sigma, mode="reflect")
    h, w = img.shape
    ph, pw = (-h) % f, (-w) % f
    padded = np.pad(img, ((0, ph), (0, pw)), mode="reflect") if ph or pw else img
    small = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma=sigma / f, mode="reflect")
    return ndimage.zoom(small, f, order=1, mode="nearest", grid_mode=True)[:h, :w]


MAX_CANDIDATES = 64  # reflections considered for the columns' own one


def _column_reflection(masked: np.ndarray, power: np.ndarray, band: np.ndarray, fr: np.ndarray, iy: int, ix: int,
                       side: int) -> tuple[int, int]:
    """The strongest reflection (iy, ix), or the columns' own one when the strongest is a superstructure's (module doc)."""
    top = masked[iy, ix]
    peaks = (masked == ndimage.maximum_filter(masked, size=5)) & (masked >= 0.2 * top)
    py, px = np.nonzero(peaks)
    if len(py) < 2:
        return iy, ix
    # the strongest candidates only: a noisy or streaked spectrum has thousands of local maxima above 0.2 of the top
    # (9 s per 384^2 scene before this limit), and the columns' reflection is never far down the list
    keep = np.argsort(-masked[py, px], kind="stable")[:MAX_CANDIDATES]
    py, px = py[keep], px[keep]
    cy, cx = masked.shape[0] // 2, masked.shape[1] // 2
    vec = np.stack([py - cy, px - cx], axis=1).astype(np.float64)
    pw = masked[py, px]
    f0 = fr[iy, ix]
    for k in np.argsort(-fr[py, px]):
        if fr[py[k], px[k]] < 1.3 * f0:
            break
        stronger = vec[pw >= pw[k]]
        sums = stronger[:, None, :] + stronger[None, :, :]
        tol = 1.5 + 0.03 * np.hypot(*vec[k])
        if (np.hypot(*(sums - vec[k]).transpose(2, 0, 1)) <= tol).any():
            continue  # a harmonic of stronger reflections
        ring = band & (np.abs(fr - fr[py[k], px[k]]) <= 1.5 / side)
        if power[py[k], px[k]] / max(np.median(power[ring]), 1e-30) >= MIN_CONTRAST:
            return int(py[k]), int(px[k])
    return iy, ix


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a 2D float image to ``shape`` (cubic spline; anti-aliased when shrinking)."""
    h, w = image.shape
    if (h, w) == tuple(shape):
        return image.astype(np.float32, copy=False)
    zy, zx = shape[0] / h, shape[1] / w
    src = image
    if zy < 1 or zx < 1:  # low-pass to the new Nyquist limit before shrinking
        src = ndimage.gaussian_filter(image, sigma=(max(0.0, (1 / zy - 1) / 2), max(0.0, (1 / zx - 1) / 2)), mode="reflect")
    out = ndimage.zoom(src.astype(np.float32, copy=False), (zy, zx), order=3, mode="reflect", grid_mode=True)
    if out.shape != tuple(shape):  # zoom rounds; crop or pad to the exact shape
        out = np.pad(out, [(0, max(0, s - o)) for s, o in zip(shape, out.shape)], mode="edge")[: shape[0], : shape[1]]
    return out


def check_period_range(period_range) -> tuple[float, float] | None:
    """A period range (px) as two floats, low to high, or a ValueError that says what is wrong with it."""
    if period_range is None:
        return None
    try:
        low, high = (float(v) for v in period_range)
    except (TypeError, ValueError):
        raise ValueError(f"a period range is two numbers of px, low to high, not {period_range!r}") from None
    if not (np.isfinite(high) and 1.0 <= low <= high):
        raise ValueError(f"the period range must be two finite periods of at least 1 px, low to high, not {period_range!r}")
    return low, high


def check_clip(clip) -> float:
    """The input clip (normalised units) as a float above 1, or a ValueError."""
    try:
        c = float(clip)
    except (TypeError, ValueError):
        raise ValueError(f"the input clip must be a number, not {clip!r}") from None
    if not (np.isfinite(c) and c > 1):
        raise ValueError(f"the input clip must be a finite number above 1 (normalised units; 3 or 8 are usual), not {clip!r}")
    return c
