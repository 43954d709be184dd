"""The guard on every result: where does a denoised image disagree with the data beyond noise?

``check(noisy, denoised)`` needs no ground truth. If ``denoised`` is the true mean of
``noisy``, the residual ``noisy - denoised`` is pure noise; a filled vacancy, an erased dopant
or a flattened dent leaves a residual shaped like a column that, summed over the column,
stands tens of sigma out of the noise. The statistic (a local likelihood test, as in Mohan et
al., "Deep denoising for scientific discovery"):

1. **Intensity match.** The output is mapped onto the data by the least-squares affine map
   ``mu = a * denoised + b``, so an output in another range (another program's, or one in
   counts while the data are detector values) is checked all the same. An output that does
   not follow the data at all (slope <= 0, or no correlation with the smoothed data) is an
   error, not a map.
2. **Noise model.** Poisson-Gaussian: ``var(noisy) = g * mu + c``. Real detector images are
   not counts, so ``g`` (detector values per electron) and ``c`` (read noise and offset) are
   fitted from the pair itself, by binning the squared residual over ``mu`` on a subsample,
   twice: the second fit leaves out the regions the first flagged, so the errors being looked
   for do not inflate the noise they are measured against.
3. **Local standardised residual.** Per-pixel residuals are standardised and clipped at
   ±4 sigma (a hot pixel the output rightly removed is one pixel, not a region), then
   ``z = (K * r) / sqrt(K^2 * var)`` with ``K`` a Gaussian of the atom-column scale. Under
   the noise model ``z`` is a standard normal at every pixel.
4. **Flags.** ``|z| > threshold`` (4.5 by default); the positive threshold is raised by the
   Cornish-Fisher term of the local noise skewness, since sums of few Poisson counts have a
   long bright tail. Flagged specks smaller than half a column core are dropped. On the true
   mean image, noise alone leaves 0-4 small regions per megapixel (doses 1-50, docs/fidelity.md).
   Positive ``z``: the data are brighter than the output (an erased atom); negative: the
   output is brighter than the data (an invented atom).

Speed: the smoothing runs on 2x2 (or 4x4) binned sums when the column scale allows it; the
whole check is a handful of passes over the image (see benchmarks/consistency.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CLIP = 4.0  # per-pixel residuals are clipped at this many sigma before the local sum
THRESHOLD = 4.5
MIN_SCALE = 0.7  # px


class ConsistencyError(ValueError):
    """The pair cannot be checked (shapes, NaNs, an output unrelated to the data)."""


class UnfollowedOutput(ConsistencyError):
    """The output does not follow the data: a pair mixed up by hand, or, where the tool made the pair itself, a model
    whose output has nothing to do with the image (:func:`in_denoising` says so)."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"the output does not follow the data ({detail}): is it the denoised version of this very "
                         "image, in the same orientation and crop?")


def in_denoising(exc: ConsistencyError) -> str:
    """What a check or refit that could not run means where the tool denoised the image itself (the CLI's and the
    widget's own pairs): an unfollowed output is then the model's fault, not a mixed-up pair."""
    if isinstance(exc, UnfollowedOutput):
        return (f"the model's output does not follow this image ({exc.detail}): the model does not suit these data, "
                "or its file is not the model it seems (a plain .pth away from the training run's denoiser.safetensors "
                "is read as a reference CycleGAN generator). Do not use this result")
    return str(exc)


@dataclass
class Consistency:
    """The result of :func:`check` for one image (or a stack, summed over its planes)."""

    z: np.ndarray  # float32, input's shape: local standardised residual (data - output)
    flagged: np.ndarray  # bool, input's shape: |z| > threshold
    regions: int  # connected flagged regions
    threshold: float
    scale: float  # px, sigma of the column-scale window
    gain: float  # fitted noise model: var = gain * mean + var_offset (data units)
    var_offset: float  # var = gain * mean + var_offset (negative when the detector offset dominates)
    slope: float  # output mapped to the data as slope * output + intercept
    intercept: float

    @property
    def share(self) -> float:
        """Share of pixels flagged."""
        return float(self.flagged.mean()) if self.flagged.size else 0.0

    erased: int = 0  # flagged regions where the data are brighter than the output (something removed)
    invented: int = 0  # flagged regions where the output is brighter than the data (something added)

    def text(self) -> str:
        """One line for people."""
        if self.regions == 0:
            return f"consistent with the data: no region differs beyond noise (|z| > {self.threshold:g})"
        verb = "disagrees" if self.regions == 1 else "disagree"
        return (f"{self.regions} region{'s' if self.regions != 1 else ''} {verb} with the data beyond noise "
                f"({100 * self.share:.2f} % of pixels; {self.invented} brighter in the output than in the data, "
                f"{self.erased} darker): look at the consistency map before trusting them")

    def summary(self) -> dict:
        return {"flagged_share": self.share, "regions": self.regions, "invented": self.invented, "erased": self.erased,
                "threshold": self.threshold, "scale_px": self.scale, "gain": self.gain, "var_offset": self.var_offset,
                "slope": self.slope, "intercept": self.intercept}


def _count_regions(mask: np.ndarray) -> int:
    if mask.ndim == 2:
        return int(ndimage.label(mask)[1])
    return sum(_count_regions(m) for m in mask.reshape(-1, *mask.shape[-2:]))


def _as_float(name: str, a) -> tuple[np.ndarray, float, bool]:
    """The image as float32 divided by a power-of-two unit (so amperes, counts and 1e20 all work), that unit, and
    whether it came as floats (only floats can hold NaN or infinite pixels)."""
    try:
        arr = np.asarray(a)
    except Exception as exc:  # e.g. a ragged list
        raise ConsistencyError(f"the {name} image is not an array: {exc}") from None
    if arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise ConsistencyError(f"the {name} image must hold numbers, got dtype {arr.dtype}")
    if arr.ndim < 2 or min(arr.shape[-2:]) < 8:
        raise ConsistencyError(f"need 2D images of at least 8 x 8 px (or stacks of them), got shape {arr.shape} for the "
                               f"{'data' if name == 'noisy' else name}")
    flat = arr.reshape(-1)
    sub = flat[spread(flat.size, 1 << 14)].astype(np.float64)
    sub = np.abs(sub[np.isfinite(sub)])
    peak = float(sub.max()) if sub.size else 0.0
    unit = 2.0 ** np.round(np.log2(peak)) if peak > 0 and np.isfinite(peak) else 1.0
    floating = arr.dtype.kind == "f"
    if 2.0**-10 <= unit <= 2.0**20:  # detector values, counts, normalised images: float32 as they are (fast)
        return arr.astype(np.float32, copy=False), 1.0, floating
    if unit < 2.0**100 and arr.dtype.itemsize <= 4:
        out = arr.astype(np.float32)
        out *= np.float32(1.0 / unit)
        return out, unit, floating
    return (arr.astype(np.float64) / unit).astype(np.float32), unit, floating


def spread(size: int, n: int) -> np.ndarray | slice:
    """Flat indices of about ``n`` of ``size`` pixels, drawn at random over the whole image (a fixed seed: the same
    pixels every time), or every pixel where there are fewer than ``2 n``. Not a strided grid: every k-th pixel of a
    lattice whose period divides k sees a single place in its unit cell (a 2048² image at an 8 px period, sampled
    every 8th pixel, is all background or all column)."""
    if size < 2 * n:
        return slice(None)
    return np.sort(np.random.default_rng(0).integers(0, size, n))


def fill_holes(holes: np.ndarray, d: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """``d`` and ``others`` with their pixels at ``holes`` set to the median of ``d`` elsewhere: a value inside the
    output's range, so that the filled pixels neither steer a fit nor stand out."""
    fill = np.float32(np.median(d[~holes]))
    return tuple(np.where(holes, fill, a) for a in (d, *others))


def _bin(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (the image cropped to whole blocks), as float32; strided sums are fast."""
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    out = np.zeros((h // k, w // k), np.float32)
    for i in range(k):
        for j in range(k):
            out += a[i:h:k, j:w:k]
    out *= np.float32(1.0 / (k * k))
    return out


def _fit_affine(y: np.ndarray, d: np.ndarray, bound: float) -> tuple[float, float]:
    """``a * d + b`` closest to the data; an error when the output does not follow the data.

    Least squares over a pixel subsample (noise in the data does not bias the slope), leaving out
    pixels at or above the hot-pixel ``bound``.
    """
    at = spread(y.size, 250_000)
    ys, ds = y.reshape(-1)[at].astype(np.float64), d.reshape(-1)[at].astype(np.float64)
    ok = ys < bound
    if ok.sum() > 0.5 * ok.size:
        ys, ds = ys[ok], ds[ok]
    if not ys.std() > 0:
        raise ConsistencyError("the data are constant (a blank or saturated frame): there is nothing to check against")
    dv = ds - ds.mean()
    var_d = float(dv @ dv)
    if not var_d > 1e-12 * max(float(np.abs(ds).max()) ** 2, 1e-300) * len(ds):
        raise ConsistencyError("the output is constant: there is nothing to compare with the data")
    a = float(dv @ (ys - ys.mean())) / var_d
    b = float(ys.mean() - a * ds.mean())
    # correlation at the column scale, both smoothed (sigma 1 px) so that shot noise averages out even at 0.3 counts/px
    # and a lattice of 3 px still shows; on a central crop of at most 1024². Not over blocks: 8 x 8 blocks of an 8 px
    # lattice all hold one unit cell, and the correlation of an unvarying specimen was noise.
    from .tiling import central_crop

    yc = ndimage.gaussian_filter(np.minimum(central_crop(y), np.float32(bound)), 1.0).ravel().astype(np.float64)
    dc = ndimage.gaussian_filter(np.asarray(central_crop(d), dtype=np.float32), 1.0).ravel().astype(np.float64)
    corr = float(np.corrcoef(yc, dc)[0, 1]) if yc.std() > 0 and dc.std() > 0 else 0.0
    need = max(0.1, 5.0 / np.sqrt(len(yc) / (4 * np.pi)))  # 5 sigma of the correlation of independent 1 px blobs
    if need > 0.8:  # under about 22 x 22 px even a perfect output could hardly show that it follows the data
        raise ConsistencyError(f"the image is too small to compare with its data ({y.shape[0]} x {y.shape[1]} px; at "
                               "least 24 x 24 px)")
    if a <= 0 or not corr > need:
        raise UnfollowedOutput(f"slope {a:.3g}, correlation {corr:.2f} with the data at the column scale")
    return a, b


def _fit_noise(y: np.ndarray, mu: np.ndarray, keep: np.ndarray | None) -> tuple[float, float]:
    """Poisson-Gaussian ``var = g * mu + c`` from binned squared residuals (subsampled, optionally masked)."""
    at = spread(y.size, 400_000)
    ys, ms = y.reshape(-1)[at].astype(np.float64), mu.reshape(-1)[at].astype(np.float64)
    if keep is not None:
        k = keep.reshape(-1)[at]
        if k.sum() > 0.2 * k.size:
            ys, ms = ys[k], ms[k]
    r2 = (ys - ms) ** 2
    edges = np.unique(np.quantile(ms, np.linspace(0, 1, 17)))
    if len(edges) < 3:  # a (nearly) flat output: one bin
        return 0.0, max(float(r2.mean()), 1e-12)
    idx = np.clip(np.searchsorted(edges, ms, side="right") - 1, 0, len(edges) - 2)
    n = np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)
    ok = n > 20
    mx = np.bincount(idx, weights=ms, minlength=len(n))[ok] / n[ok]
    vr = np.bincount(idx, weights=r2, minlength=len(n))[ok] / n[ok]
    if len(mx) < 2:
        return 0.0, max(float(r2.mean()), 1e-12)
    A = np.stack([mx, np.ones_like(mx)], axis=1)
    w = np.sqrt(n[ok]) / np.maximum(vr, 1e-12)  # relative errors of a variance estimate
    (g, c), *_ = np.linalg.lstsq(A * w[:, None], vr * w, rcond=None)
    if g < 0:  # no signal dependence seen: Gaussian noise only
        g, c = 0.0, float(np.average(vr, weights=n[ok]))
    lowest = float(g * mx.min() + c)
    if lowest <= 0:  # keep the variance positive at the darkest level seen
        c += 1e-3 * float(vr.mean()) - lowest
    return float(g), float(c)


def _z_map(y: np.ndarray, mu: np.ndarray, g: float, c: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Local standardised residual, and the skewness of its noise (Poisson sums are right-skewed at low counts).

    Both are computed on k x k binned sums when the scale allows, then block-replicated back.
    """
    var = mu * np.float32(g)
    var += np.float32(c)
    np.maximum(var, np.float32(max(1e-6 * abs(c), 1e-12)), out=var)
    sd = np.sqrt(var)
    r = y - mu
    r /= sd
    np.clip(r, -CLIP, CLIP, out=r)
    r *= sd
    k = 4 if scale >= 5 else 2 if scale >= 1.2 else 1
    if k > 1:
        r, var = _bin(r, k), _bin(var, k)
    s = scale / k
    num = ndimage.gaussian_filter(r, s, mode="reflect", truncate=3.0)
    # sum of K^2 var: K^2 is a Gaussian of sigma/sqrt(2) with mass 1 / (4 pi sigma^2), K^3 one of sigma/sqrt(3) with
    # mass 1 / (3 (2 pi sigma^2)^2); a bin mean of k^2 pixels has variance var / k^2 and third cumulant k3 / k^4
    den = ndimage.gaussian_filter(var, s / np.sqrt(2.0), mode="reflect", truncate=3.0) / np.float32(4.0 * np.pi * s * s * k * k)
    z = num / np.sqrt(den)
    # Poisson third cumulant per pixel: gain * (Poisson variance) <= gain * var
    k3 = ndimage.gaussian_filter(var, s / np.sqrt(3.0), mode="reflect", truncate=3.0) * np.float32(max(g, 0.0) / (3.0 * (2 * np.pi * s * s) ** 2 * k**4))
    skew = k3 / den**1.5
    if k > 1:
        z, skew = _upsample(z, k, y.shape), _upsample(skew, k, y.shape)
    return z, skew


def _flag(z: np.ndarray, skew: np.ndarray, threshold: float) -> np.ndarray:
    """|z| > threshold, the positive threshold raised by the Cornish-Fisher term of the noise's skewness."""
    t_pos = threshold + np.minimum(skew * np.float32((threshold**2 - 1) / 6.0), np.float32(threshold))
    return (z > t_pos) | (z < -threshold)


def _upsample(z: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Block-replicate a binned map back to ``shape`` (edge rows/cols past whole blocks repeat the last block)."""
    out = np.repeat(np.repeat(z, k, axis=0), k, axis=1)
    ph, pw = shape[0] - out.shape[0], shape[1] - out.shape[1]
    if ph or pw:
        out = np.pad(out, ((0, ph), (0, pw)), mode="edge")
    return out


def column_scale(image: np.ndarray) -> float:
    """The atom-column scale (px) for :func:`check`: 0.15 of the lattice period, from a central 256² crop (4 periods
    of the longest one looked for; a 512² crop cost 4x the time, about a fifth of check() on a 2048² image)."""
    from .lattice import estimate_period
    from .tiling import central_crop

    first = image.reshape(-1, *image.shape[-2:])[0]
    est = estimate_period(central_crop(first, 256), max_period=64.0)
    return max(MIN_SCALE, 0.15 * est.period) if est.found else 1.5


def hot_bound(y: np.ndarray) -> float:
    """A level far above the bulk of the data (hot pixels, cosmic rays): the 99.9th percentile plus 3x its
    distance from the median, on a subsample (:func:`spread`)."""
    flat = np.asarray(y).reshape(-1)
    sub = flat[spread(flat.size, 1 << 16)]
    q50, q999 = np.quantile(sub, [0.5, 0.999])
    return float(q999 + 3.0 * (q999 - q50))


@dataclass
class Matched:
    """A data/output pair on the data's scale with its noise model (steps 1 and 2 of the module docstring)."""

    y: np.ndarray  # the data, clipped at the hot-pixel bound
    mu: np.ndarray  # the output mapped onto the data, a * output + b, clipped at the same bound
    cool: np.ndarray  # bool: pixels below the bound (and in ``keep``), the ones the noise model was fitted on
    a: float
    b: float
    g: float  # var = g * mu + c
    c: float


def match(y: np.ndarray, d: np.ndarray, keep: np.ndarray | None = None) -> Matched:
    """Map the output ``d`` onto the data ``y`` and fit the pair's noise model; hot pixels (and pixels outside
    ``keep``) steer neither. Raises :class:`ConsistencyError` for an output that does not follow the data."""
    bound = np.float32(hot_bound(y))
    a, b = _fit_affine(y, d, bound)
    cool = y < bound
    if keep is not None:
        cool &= keep
    y = np.minimum(y, bound)  # hot pixels steer no fit and flag nothing, whether the output kept them or not
    mu = d * np.float32(a)
    mu += np.float32(b)
    np.minimum(mu, bound, out=mu)
    g, c = _fit_noise(y, mu, cool)
    return Matched(y, mu, cool, a, b, g, c)


def _check_plane(y, d, scale, threshold):
    m = match(y, d)
    y, mu, cool, a, b, g, c = m.y, m.mu, m.cool, m.a, m.b, m.g, m.c
    z, skew = _z_map(y, mu, g, c, scale)
    flagged = _flag(z, skew, threshold)
    if flagged.mean() > 1e-4:  # refit the noise without what the first pass flagged (and a margin around it)
        grown = ndimage.maximum_filter(flagged, size=2 * max(1, int(round(2 * scale))) + 1)
        keep = cool & ~grown
        g2, c2 = _fit_noise(y, mu, keep)
        if abs(g2 - g) > 0.02 * max(abs(g), 1e-12) or abs(c2 - c) > 0.02 * max(abs(c), 1e-12):
            g, c = g2, c2
            z, skew = _z_map(y, mu, g, c, scale)
            flagged = _flag(z, skew, threshold)
    flagged = _drop_specks(flagged, scale)
    return z, flagged, (g, c, a, b)


def _drop_specks(flagged: np.ndarray, scale: float) -> np.ndarray:
    """Flagged regions smaller than a column core (pi scale^2 / 2 px) are noise peaks, not columns."""
    if not flagged.any():
        return flagged
    lab, n = ndimage.label(flagged)
    area = np.bincount(lab.ravel(), minlength=n + 1)
    big = area >= max(2.0, 0.5 * np.pi * scale * scale)
    big[0] = False
    return big[lab]


def check(noisy, denoised, *, scale: float | None = None, threshold: float = THRESHOLD) -> Consistency:
    """Where ``denoised`` disagrees with ``noisy`` beyond noise (see the module docstring).

    ``noisy`` and ``denoised`` are images of one shape (2D, or stacks whose last two axes
    are the image; each plane is checked on its own). ``scale`` is the sigma (px) of the
    column-scale window, 0.15 of the lattice period estimated from the data unless given.
    Works on any output, another program's included: intensities are matched affinely.
    """
    y, unit_y, y_float = _as_float("noisy", noisy)
    d, unit_d, d_float = _as_float("denoised", denoised)
    if y.shape != d.shape:
        raise ConsistencyError(f"the denoised image has shape {d.shape} but the data have {y.shape}: "
                               "compare an output with the very image it came from")
    try:
        threshold = float(threshold)
        scale = None if scale is None else float(scale)
    except (TypeError, ValueError):
        raise ConsistencyError(f"threshold and scale must be numbers, got {threshold!r} and {scale!r}") from None
    no_holes = np.zeros(y.shape, bool)
    holes = ~np.isfinite(y) if y_float else no_holes  # integer data (detector values) need no pass over the pixels
    d_holes = ~np.isfinite(d) if d_float else no_holes
    if holes.any() or d_holes.any():
        # pixels missing in the data may stay missing in the output (denoise() keeps them NaN); nothing else may
        if (d_holes & ~holes).any():
            raise ConsistencyError(f"the denoised image has {int((d_holes & ~holes).sum())} NaN or infinite pixels where "
                                   "the data have numbers: fill or crop them before checking")
        if (holes & ~d_holes).any():
            raise ConsistencyError(f"the data have {int((holes & ~d_holes).sum())} NaN or infinite pixels where the output "
                                   "has numbers: set those output pixels to NaN too, or crop them, before checking")
        if holes.all():
            raise ConsistencyError("the data have no finite pixels (all NaN or infinite): there is nothing to check")
        d, y = fill_holes(holes, d, y)
    if not (np.isfinite(threshold) and 0 < threshold <= 100):
        raise ConsistencyError(f"threshold must be a number of sigma between 0 and 100 (4.5 by default), got {threshold}")
    blank = holes.reshape(-1, *y.shape[-2:]).all(axis=(1, 2))  # planes without a number (denoise() gives them as NaN)
    if scale is None:  # measured on the first plane with numbers
        scale = column_scale(y.reshape(-1, *y.shape[-2:])[int(np.argmin(blank))])
    if not (np.isfinite(scale) and 0.5 <= scale <= min(y.shape[-2:]) / 4):
        raise ConsistencyError(f"scale must be a number of px from 0.5 to a quarter of the image side "
                               f"({min(y.shape[-2:]) / 4:g}), got {scale}; leave it out to take 0.15 of the lattice period")
    scale = max(float(scale), MIN_SCALE)
    planes_y = y.reshape(-1, *y.shape[-2:])
    planes_d = d.reshape(-1, *d.shape[-2:])
    z = np.empty(planes_y.shape, np.float32)
    flagged = np.empty(planes_y.shape, bool)
    fits = []
    for i, (py, pd) in enumerate(zip(planes_y, planes_d)):
        if blank[i]:
            z[i], flagged[i] = np.nan, False
            continue
        try:
            z[i], flagged[i], fit = _check_plane(py, pd, scale, threshold)
        except ConsistencyError as exc:
            if len(planes_y) == 1:
                raise
            raise ConsistencyError(f"plane {i}: {exc}") from None
        fits.append(fit)
    g, c, a, b = (float(np.mean(v)) for v in zip(*fits))
    # back to the caller's units
    with np.errstate(over="ignore"):  # data near the float64 limit: the variance offset may be inf
        g, c, a, b = g * unit_y, c * unit_y**2, a * unit_y / unit_d, b * unit_y
    z, flagged = z.reshape(y.shape), flagged.reshape(y.shape)
    if holes.any():
        z[holes], flagged[holes] = np.nan, False
    return Consistency(z, flagged, _count_regions(flagged), float(threshold), scale, g, c, a, b,
                       erased=_count_regions(flagged & (z > 0)), invented=_count_regions(flagged & (z < 0)))
