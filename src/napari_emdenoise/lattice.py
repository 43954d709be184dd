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

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from . import tiling

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


def estimate_period(image, min_period: float = MIN_PERIOD, max_period: float = MAX_PERIOD) -> PeriodEstimate:
    """Estimate the lattice period (px) of a 2D image (numpy array or torch tensor) from its strongest Bragg
    reflection; a tensor is analysed on its own device."""
    if np.ndim(image) != 2:
        raise ValueError(f"estimate_period needs a 2D image, got shape {tuple(np.shape(image))}")
    return estimate_periods(image[None], min_period, max_period)[0]


SATURATED = 1e-3  # share of an analysis crop's pixels at exactly its maximum taken for a saturated detector

GPU_PLANES = 16  # planes analysed together on a GPU (each 1024^2 plane holds about 100 MB of float64 work arrays);
# on a CPU one at a time, which keeps them in cache: 8 planes together took twice as long


def estimate_periods(planes, min_period: float = MIN_PERIOD, max_period: float = MAX_PERIOD) -> list[PeriodEstimate]:
    """:func:`estimate_period` of each plane of an (N, H, W) stack or a list of 2-D planes of one shape (numpy arrays or
    torch tensors), computed on the planes' device, a GPU's planes together."""
    if isinstance(planes, (list, tuple)):
        shapes = {tuple(np.shape(p)) for p in planes}
        if len(shapes) > 1 or any(len(s) != 2 for s in shapes):
            raise ValueError(f"estimate_periods needs 2-D planes of one shape, got shapes {sorted(shapes)}")
    elif np.ndim(planes) != 3:
        raise ValueError(f"estimate_periods needs an (N, H, W) stack, got shape {tuple(np.shape(planes))}")
    elif not isinstance(planes, torch.Tensor):
        planes = np.asarray(planes)
    out: list[PeriodEstimate] = []
    on_gpu = len(planes) and isinstance(planes[0], torch.Tensor) and planes[0].device.type != "cpu"
    chunk = GPU_PLANES if on_gpu else 1
    for s in range(0, len(planes), chunk):
        part = planes[s : s + chunk]
        # crop first: a 4096^2 frame costs what 1024^2 does
        crop = [tiling.central_crop(p) for p in part]
        crop = torch.stack([_float64(c.detach()) if isinstance(c, torch.Tensor)
                            else torch.from_numpy(np.asarray(c, np.float64)) for c in crop])
        out += _estimate_chunk(crop, part, float(min_period), float(max_period))
    return out


@dataclass(frozen=True)
class _Geometry:
    """The frequency grid of an analysed image shape and its band of lattice frequencies."""

    fy: torch.Tensor  # (h,) cycles/px, zero frequency at h // 2
    fx: torch.Tensor  # (w,)
    fr: torch.Tensor  # (h, w) radial frequency
    band: torch.Tensor  # (h, w) bool: frequencies a lattice can have
    band_at: torch.Tensor  # flat indices of the band's pixels, by increasing frequency
    band_fr: torch.Tensor  # their frequencies, increasing
    half: float  # half the width of a ring of equal frequency


@functools.lru_cache(maxsize=8)
def _geometry(h: int, w: int, min_period: float, max_period: float, device: torch.device) -> _Geometry:
    f64 = torch.float64
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, dtype=f64, device=device))
    fx = torch.fft.fftshift(torch.fft.fftfreq(w, dtype=f64, device=device))
    fr = torch.hypot(fy[:, None], fx[None, :])
    side = min(h, w)
    band = (fr >= 1.0 / max_period) & (fr <= 1.0 / min_period)
    if side < 2 * max_period:  # small image: at least 2 periods across
        band &= fr >= 2.0 / side
    at = torch.nonzero(band.flatten())[:, 0]
    band_fr, order = fr.flatten()[at].sort(stable=True)
    return _Geometry(fy, fx, fr, band, at[order], band_fr, 1.5 / side)


def _float64(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64 where it lies, or on the CPU for a device without float64 (Apple MPS)."""
    return t.to("cpu" if t.device.type == "mps" else t.device, torch.float64)


def _estimate_chunk(img: torch.Tensor, planes, min_period: float, max_period: float) -> list[PeriodEstimate]:
    """Estimates for the analysis crops ``img`` (n, h, w, float64) of ``planes`` (n, H, W)."""
    none = PeriodEstimate(None, 0.0, 0.0)
    n = img.shape[0]
    finite = torch.isfinite(img)
    if not bool(finite.all()):  # NaN/Inf pixels count as the whole plane's median of finite pixels (computed only then)
        for k in range(n):
            whole = np.asarray(planes[k].detach().cpu() if isinstance(planes[k], torch.Tensor) else planes[k], dtype=np.float64)
            good = whole[np.isfinite(whole)]
            fill = float(np.median(good)) if good.size else 0.0
            img[k] = torch.where(finite[k], img[k], torch.full_like(img[k], fill))
    h, w = img.shape[-2:]
    if min(h, w) < 16:
        return [none] * n
    # a plateau at the top (a saturated detector: more than SATURATED of the pixels at exactly the maximum, some of
    # them inside a 3x3 block of it: not a ramp's last column nor lone hot pixels) counts as the median: its edges
    # outweighed the lattice (one 50x50 block of a 384^2 frame at 28 px: "no clear lattice")
    at_top = img == img.amax(dim=(1, 2), keepdim=True)
    share = at_top.double().mean(dim=(1, 2))
    inner = ~torch.nn.functional.max_pool2d((~at_top).double()[:, None], 3, stride=1, padding=1)[:, 0].bool()
    for k in torch.nonzero((share > SATURATED) & (share < 0.5) & inner.flatten(1).any(dim=1))[:, 0].tolist():
        img[k] = torch.where(at_top[k], img[k][~at_top[k]].median(), img[k])
    # a unit scale (the estimate does not depend on it): the power spectrum of values near 1e200 would overflow
    img = img / img.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    flat = img.std(dim=(1, 2)) == 0
    # remove slow variation (dents, gradients) so it does not leak into the lattice frequencies: first a fitted plane
    # (a ramp's reflected borders would otherwise ring at long periods), then a broad Gaussian
    # (rows and columns of a full grid are orthogonal: the plane is the line fits of the row and column means)
    dev, f64 = img.device, torch.float64
    ry = torch.arange(h, dtype=f64, device=dev) - (h - 1) / 2
    rx = torch.arange(w, dtype=f64, device=dev) - (w - 1) / 2
    tilt_y = (img.mean(dim=2) @ ry) / (ry @ ry)
    tilt_x = (img.mean(dim=1) @ rx) / (rx @ rx)
    img = img - img.mean(dim=(1, 2), keepdim=True) - tilt_y[:, None, None] * ry[None, :, None] \
        - tilt_x[:, None, None] * rx[None, None, :]
    flat |= img.std(dim=(1, 2)) <= 1e-9  # a plane and nothing else (of the unit scale)
    low = _low_pass(img, max_period / 2)
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=f64, device=dev),
                      torch.hann_window(w, periodic=False, dtype=f64, device=dev))
    power = torch.fft.fftshift(torch.fft.fft2((img - low) * win), dim=(-2, -1)).abs() ** 2
    del img, low
    g = _geometry(h, w, min_period, max_period, dev)
    fy, fx, fr = g.fy, g.fx, g.fr
    if len(g.band_at) == 0:
        return [none] * n
    masked = torch.where(g.band, power, torch.zeros((), dtype=f64, device=dev))
    top_at = masked.flatten(1).argmax(dim=1)
    rings = _RingMedians(power, g)
    at = _column_reflection(masked, fr, top_at, rings)
    # contrast against the median power in a thin ring at the same frequency
    contrast = power.flatten(1).gather(1, at[:, None])[:, 0] / rings(torch.arange(n, device=dev), fr.flatten()[at]).clamp_min(1e-30)
    # sub-pixel centre of the peak: power-weighted centroid in a 3x3 neighbourhood
    d = torch.arange(-1, 2, device=dev)
    yy, xx = (at // w)[:, None] + d, (at % w)[:, None] + d  # (n, 3) rows and columns around each peak
    inside = ((yy >= 0) & (yy < h))[:, :, None] & ((xx >= 0) & (xx < w))[:, None, :]
    idx = (yy.clamp(0, h - 1)[:, :, None] * w + xx.clamp(0, w - 1)[:, None, :]).flatten(1)
    pw = power.flatten(1).gather(1, idx).view(n, 3, 3) * inside
    cfy = (pw * fy[yy.clamp(0, h - 1)][:, :, None]).sum(dim=(1, 2)) / pw.sum(dim=(1, 2))
    cfx = (pw * fx[xx.clamp(0, w - 1)][:, None, :]).sum(dim=(1, 2)) / pw.sum(dim=(1, 2))
    stats = torch.stack([contrast, cfy, cfx, flat.to(f64)], dim=1).cpu().numpy()  # the one copy back
    out = []
    for c, cy, cx, is_flat in stats:
        f, angle = float(np.hypot(cy, cx)), float(np.degrees(np.arctan2(cy, cx)))
        if is_flat:
            out.append(none)
        elif not (c >= MIN_CONTRAST and np.isfinite(f) and f > 0):
            out.append(PeriodEstimate(None, float(c), angle))
        else:
            out.append(PeriodEstimate(float(1.0 / f), float(c), angle))
    return out


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    """scipy.ndimage's Gaussian weights (truncated at 4 sigma), float64."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def mirror_index(n: int, before: int, after: int, device) -> torch.Tensor:
    """Indices that extend an axis of n samples by half-sample symmetry (scipy's "reflect", numpy's "symmetric":
    d c b a | a b c d | d c), by any length, also more than n."""
    return _mirror(torch.arange(-before, n + after, device=device), n)


def _mirror(i: torch.Tensor, n: int) -> torch.Tensor:
    """Any indices, brought into an axis of n samples by half-sample symmetry."""
    i = i % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(x: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(mode="reflect") of the last two axes of an (N, H, W) float64 tensor."""
    for axis, s in ((1, sigma[0]), (2, sigma[1])):
        if s > 0:
            x = _mirrored_fir(x, _gaussian_kernel(s, x.device).to(x.dtype), axis)
    return x


def _mirrored_fir(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """A symmetric FIR filter (odd length) along ``axis``, on the half-sample-symmetric extension (scipy's "reflect"):
    a weighted sum of shifted views, one pass over the plane per tap (conv1d in float64 has no cuDNN kernel and
    unrolls each row on a GPU)."""
    r = (len(kernel) - 1) // 2
    n = x.shape[axis]
    ext = x.index_select(axis, mirror_index(n, r, r, x.device))
    weights = kernel.tolist()
    out = ext.narrow(axis, 0, n) * weights[0]
    for j in range(1, len(weights)):
        out += ext.narrow(axis, j, n) * weights[j]
    return out


def _low_pass(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of ``sigma`` px (reflected borders) of each plane of (N, H, W), computed on planes
    block-averaged by up to sigma / 8 and brought back linearly: what is left of the lattice after such a blur is
    smooth, and a direct blur of 1024^2 at sigma 64 cost most of the estimate."""
    f = max(1, int(sigma // 8))
    if f == 1:
        return gaussian_blur(img, (sigma, sigma))
    n, h, w = img.shape
    ph, pw = (-h) % f, (-w) % f
    padded = torch.nn.functional.pad(img[:, None], (0, pw, 0, ph), mode="reflect")[:, 0] if ph or pw else img
    small = padded.reshape(n, padded.shape[1] // f, f, padded.shape[2] // f, f).mean(dim=(2, 4))
    small = gaussian_blur(small, (sigma / f, sigma / f))
    up = torch.nn.functional.interpolate(small[:, None], size=padded.shape[1:], mode="bilinear", align_corners=False)
    return up[:, 0, :h, :w]


MAX_CANDIDATES = 64  # reflections considered for the columns' own one


class _RingMedians:
    """The median power in the thin ring of the band at a given frequency: the band's pixels sorted by frequency (once
    per image geometry) make each ring one contiguous run."""

    def __init__(self, power: torch.Tensor, geometry: _Geometry):
        self.power, self.g = power.flatten(1), geometry

    def __call__(self, plane: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Medians (m,) for planes (m,) and frequencies (m,); like numpy's median, the mean of the two middle values
        of an even run."""
        lo = torch.searchsorted(self.g.band_fr, f - self.g.half, side="left")
        hi = torch.searchsorted(self.g.band_fr, f + self.g.half, side="right")
        length = hi - lo
        span = int(length.max()) if len(f) else 0
        if span == 0:
            return torch.zeros_like(f)
        pos = lo[:, None] + torch.arange(span, device=f.device)
        at = self.g.band_at[pos.clamp_max(len(self.g.band_at) - 1)]
        vals = self.power[plane[:, None], at]
        vals = torch.where(pos < hi[:, None], vals, torch.full((), torch.inf, dtype=vals.dtype, device=vals.device))
        vals = vals.sort(dim=-1).values
        a = vals.gather(1, ((length - 1).clamp_min(0) // 2)[:, None])[:, 0]
        b = vals.gather(1, (length // 2).clamp_max(span - 1)[:, None])[:, 0]
        return torch.where(length > 0, (a + b) / 2, torch.zeros_like(a))


def _max_filter5(x: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.maximum_filter(size=5) of each plane of (N, H, W) (with reflected borders a 5-wide window sees no
    value it does not already hold, so padding with -inf is the same); shifted maxima, 10x faster than max_pool2d on a
    CPU in float64."""
    for dim in (-2, -1):
        n = x.shape[dim]
        p = torch.nn.functional.pad(x, (0, 0, 2, 2) if dim == -2 else (2, 2), value=-torch.inf)
        m = p.narrow(dim, 0, n)
        for d in range(1, 5):
            m = torch.maximum(m, p.narrow(dim, d, n))
        x = m
    return x


def _column_reflection(masked: torch.Tensor, fr: torch.Tensor, top_at: torch.Tensor, rings: _RingMedians) -> torch.Tensor:
    """Per plane, the flat index of the strongest reflection, or of the columns' own one when the strongest is a
    superstructure's (module doc): the highest-frequency reflection among the strongest peaks that is at least 1.3x
    the strongest's frequency, not the sum of two stronger reflections, and clear of the noise."""
    n, h, w = masked.shape
    top = masked.flatten(1).gather(1, top_at[:, None])  # (n, 1)
    peaks = masked == _max_filter5(masked)
    score = torch.where(peaks & (masked >= 0.2 * top[:, :, None]), masked, torch.full((), -1.0, dtype=masked.dtype,
                                                                                        device=masked.device)).flatten(1)
    # the strongest candidates only: a noisy or streaked spectrum has thousands of local maxima above 0.2 of the top,
    # and the columns' reflection is never far down the list
    pw, at = score.topk(min(MAX_CANDIDATES, score.shape[1]), dim=1)  # (n, k), strongest first
    valid = pw >= 0
    vec = torch.stack([at // w - h // 2, at % w - w // 2], dim=-1).to(masked.dtype)  # (n, k, 2) from the centre
    fk = fr.flatten()[at]
    # candidate k is a harmonic when two reflections at least as strong (either may be k itself) sum to it
    strong = valid[:, :, None] & (pw[:, :, None] >= pw[:, None, :])  # strong[i, k]: i is at least as strong as k
    miss = (vec[:, :, None, None, :] + vec[:, None, :, None, :] - vec[:, None, None, :, :]).norm(dim=-1)  # (n, i, j, k)
    tol = 1.5 + 0.03 * vec.norm(dim=-1)
    harmonic = ((miss <= tol[:, None, None, :]) & strong[:, :, None, :] & strong[:, None, :, :]).flatten(1, 2).any(dim=1)
    several = valid.sum(dim=1) >= 2
    eligible = valid & ~harmonic & (fk >= 1.3 * fr.flatten()[top_at][:, None]) & several[:, None]
    plane, k = torch.nonzero(eligible, as_tuple=True)  # the ring medians of these only
    if len(plane):
        contrast = pw[plane, k] / rings(plane, fk[plane, k]).clamp_min(1e-30)
        eligible[plane, k] = contrast >= MIN_CONTRAST
    # the highest frequency among the eligible, the stronger one first on a tie; the strongest reflection otherwise
    rank = torch.where(eligible, fk, torch.full((), -1.0, dtype=fk.dtype, device=fk.device))
    best = rank.argmax(dim=1)
    chosen = at.gather(1, best[:, None])[:, 0]
    return torch.where(eligible.any(dim=1), chosen, top_at)


def resample(image, shape: tuple[int, int]):
    """Resample a 2D float image to ``shape`` (cubic spline; anti-aliased when shrinking): scipy's ``ndimage.zoom``
    (order 3, reflected borders, grid mode) after a Gaussian low-pass to the new Nyquist limit when shrinking.

    A numpy array gives float32 numpy. A torch tensor gives a float32 tensor on its device: on a GPU computed there
    with torch (:func:`_resample_torch`, the same figures to float32 rounding), on the CPU with scipy. An image that
    already has ``shape`` comes back as float32, not copied (the very array when it is float32 already).
    """
    if min(shape) < 1:
        raise ValueError(f"cannot resample to shape {tuple(shape)}: at least 1 px a side")
    if isinstance(image, torch.Tensor):
        image = image.detach()
        if image.device.type in ("cpu", "mps"):  # (MPS has no float64: scipy on the CPU, and back)
            return torch.from_numpy(resample(image.cpu().numpy(), shape)).to(image.device)
        return _resample_torch(image, shape)
    if image.dtype not in (np.float32, np.float64):  # integers and float16: scipy filters them as float32
        image = image.astype(np.float32)
    h, w = image.shape
    if (h, w) == tuple(shape):
        return image.astype(np.float32, copy=False)
    zy, zx = shape[0] / h, shape[1] / w
    src = image
    if zy < 1 or zx < 1:  # low-pass to the new Nyquist limit before shrinking
        src = ndimage.gaussian_filter(image, sigma=_antialias_sigma(zy, zx), mode="reflect")
    out = ndimage.zoom(src.astype(np.float32, copy=False), (zy, zx), order=3, mode="reflect", grid_mode=True)
    return _exact_shape(out, shape)


def _antialias_sigma(zy: float, zx: float) -> tuple[float, float]:
    return max(0.0, (1 / zy - 1) / 2), max(0.0, (1 / zx - 1) / 2)


def _exact_shape(out, shape: tuple[int, int]):
    """``zoom`` rounds its output shape: crop, or pad with the edge values, to exactly ``shape``."""
    if tuple(out.shape) == tuple(shape):
        return out
    if isinstance(out, torch.Tensor):
        rows = torch.arange(shape[0], device=out.device).clamp_max(out.shape[0] - 1)
        cols = torch.arange(shape[1], device=out.device).clamp_max(out.shape[1] - 1)
        return out[rows][:, cols]
    return np.pad(out, [(0, max(0, s - o)) for s, o in zip(shape, out.shape)], mode="edge")[: shape[0], : shape[1]]


SPLINE_POLE = np.sqrt(3.0) - 2.0  # the cubic B-spline's prefilter pole
SPLINE_RADIUS = 24  # its two-sided kernel sqrt(3) * pole^|k| is cut where it stays below 1e-14


def _resample_torch(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """:func:`resample` with torch on the tensor's device, in float64 as scipy computes: the Gaussian low-pass (its
    result rounded to float32 as scipy returns it), the B-spline prefilter as a convolution with its two-sided kernel
    on the half-sample-symmetric extension (scipy's "reflect"), then the cubic B-spline weights of the four
    coefficients around each output position."""
    h, w = image.shape
    if (h, w) == tuple(shape):
        return image.float()
    zy, zx = shape[0] / h, shape[1] / w
    x = image.float()
    if zy < 1 or zx < 1:
        x = gaussian_blur(x.double()[None], _antialias_sigma(zy, zx))[0].float()
    c = x.double()[None]
    k = torch.arange(-SPLINE_RADIUS, SPLINE_RADIUS + 1, dtype=torch.float64, device=c.device)
    kernel = np.sqrt(3.0) * SPLINE_POLE ** k.abs()
    out_shape = (int(round(h * zy)), int(round(w * zx)))
    for axis in (1, 2):
        coef = _mirrored_fir(c, kernel, axis).movedim(axis, -1)
        c = _spline_axis(coef, out_shape[axis - 1]).movedim(-1, axis)
    return _exact_shape(c[0].float(), shape)


def _spline_axis(coef: torch.Tensor, m: int) -> torch.Tensor:
    """Cubic B-spline interpolation of coefficients along the last axis (n samples) at ``m`` positions spread as
    ``zoom``'s grid mode spreads them: output pixel o samples input position (o + 1/2) n / m - 1/2."""
    n = coef.shape[-1]
    pos = (torch.arange(m, dtype=torch.float64, device=coef.device) + 0.5) * (n / m) - 0.5
    base = torch.floor(pos)
    t = pos - base
    weights = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    out = torch.zeros(*coef.shape[:-1], m, dtype=coef.dtype, device=coef.device)
    for j, wj in enumerate(weights):
        i = _mirror(base.long() + (j - 1), n)  # the coefficients' half-sample-symmetric extension
        out += wj * coef.index_select(-1, i)
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
