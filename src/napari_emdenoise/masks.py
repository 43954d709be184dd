"""Dent masks: where the specimen is thinner, from one noisy ADF image.

Sign convention: in ADF a thinner region (a dent) is *darker*. A dent mask is a float32
image on a 0–255 scale that is **large where the dent is** (255 at its deepest) and 0
where the specimen is untouched. A mask is applied to a clean target multiplicatively,
as thickness scales the ADF signal of columns and background alike (see
:func:`apply_mask`): ``target * (1 - depth * mask / 255)``.

The pipeline, each step a parameter (the project's origin used window 5, threshold 128):

1. subtract the image mean and flip the sign, so darker than average is positive;
2. smooth over ``window`` px: ``smoothing="box"`` averages each window x window block
   (the origin's); ``"gaussian"`` (default) uses sigma = window / 2. The default window is
   two lattice periods, estimated from the image, so the mask follows the dent and not the
   atom columns. Edges are mirrored: a mirrored lattice keeps its mean, a repeated edge
   row does not;
3. normalise to 0–255: ``reference="median"`` (default) maps the median, the typical
   undented specimen, to 0 and the 99.5th percentile to 255; ``"minmax"`` (the origin's)
   maps min to 0 and max to 255;
4. set pixels under ``threshold`` to 0, so the specimen outside the dent is not touched;
5. Gaussian blur of ``sigma`` px (default: one period) for a soft edge; values below 1
   are set to 0, so the mask's region is exactly where it is non-zero.

Variants applied after step 5: ``min`` — each pixel takes the lowest value within
Chebyshev distance ``radius`` (default 3); ``mean`` — the mean within Chebyshev distance
``radius`` (default 5). Both use the nearest edge pixel beyond the border.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage


VARIANTS = ("plain", "min", "mean")
DEFAULT_RADIUS = {"min": 3, "mean": 5}


class MaskError(ValueError):
    """The image cannot give a dent mask (flat, no finite pixels, wrong shape)."""


@dataclass(frozen=True)
class MaskParams:
    window: int | None = None  # px; None: two lattice periods (at least 5)
    threshold: float = 128.0  # on the 0-255 scale
    sigma: float | None = None  # px; None: one lattice period (at least 2)
    variant: str = "plain"
    radius: int | None = None  # Chebyshev radius of the variant; None: 3 for min, 5 for mean
    reference: str = "median"  # step 3: "median" (robust) or "minmax" (the origin's)
    smoothing: str = "gaussian"  # step 2: "gaussian" (sigma = window / 2) or "box" (the origin's)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "adaptive": MaskParams(),
    "origin": MaskParams(window=5, threshold=128.0, sigma=2.0, reference="minmax", smoothing="box"),
    "origin-min": MaskParams(window=5, threshold=128.0, sigma=2.0, variant="min", reference="minmax", smoothing="box"),
    "origin-mean": MaskParams(window=5, threshold=128.0, sigma=2.0, variant="mean", reference="minmax", smoothing="box"),
}


# --------------------------------------------------------------------------- the steps
def subtract_mean(image: np.ndarray) -> np.ndarray:
    """Step 1: darker than the mean becomes positive."""
    img = image.astype(np.float64)
    return img.mean() - img


def box_smooth(image: np.ndarray, window: int) -> np.ndarray:
    """Step 2 (origin): mean over each window x window block (edges mirrored, which keeps a lattice a lattice)."""
    return ndimage.uniform_filter(image, size=int(window), mode="reflect")


def smooth(image: np.ndarray, window: int, kind: str = "box") -> np.ndarray:
    """Step 2: ``box`` averages window x window blocks; ``gaussian`` uses sigma = window / 2,
    which suppresses the lattice far better than a box (no sidelobes) at the same reach."""
    if kind == "box":
        return box_smooth(image, window)
    if kind == "gaussian":
        return ndimage.gaussian_filter(image, sigma=window / 2.0, mode="reflect")
    raise ValueError(f"smoothing must be 'box' or 'gaussian', not {kind!r}")


def normalize_255(image: np.ndarray, reference: str = "minmax") -> np.ndarray:
    """Step 3: map to 0..255. ``minmax``: min to 0, max to 255 (the origin's way).

    ``median``: the median (the typical, undented specimen) to 0 and the 99.5th percentile
    (the deepest part) to 255, clipped: unlike min/max, a few extreme pixels at the image
    border or a bright contaminant cannot shift where the threshold falls.
    """
    if reference == "minmax":
        lo, hi = float(image.min()), float(image.max())
    elif reference == "median":
        lo, hi = (float(v) for v in np.percentile(image, [50, 99.5]))
    else:
        raise ValueError(f"reference must be 'minmax' or 'median', not {reference!r}")
    if not hi > lo:
        raise MaskError("the image is flat after smoothing: there is no darker region to make a mask of")
    return np.clip((image - lo) * (255.0 / (hi - lo)), 0.0, 255.0)


def threshold_below(image: np.ndarray, threshold: float) -> np.ndarray:
    """Step 4: values under ``threshold`` become 0; the rest are kept."""
    return np.where(image < threshold, 0.0, image)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Step 5."""
    return ndimage.gaussian_filter(image, sigma=float(sigma), mode="reflect") if sigma > 0 else image


def chebyshev_min(image: np.ndarray, radius: int) -> np.ndarray:
    """Lowest value within Chebyshev distance ``radius`` of each pixel."""
    return ndimage.minimum_filter(image, size=2 * int(radius) + 1, mode="nearest")


def chebyshev_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean value within Chebyshev distance ``radius`` of each pixel."""
    return ndimage.uniform_filter(image, size=2 * int(radius) + 1, mode="nearest")


# --------------------------------------------------------------------------- the pipeline
def resolve_params(image: np.ndarray, params: MaskParams | None = None) -> MaskParams:
    """Fill the adaptive defaults (window, sigma, radius) from the image's lattice period."""
    p = params or MaskParams()
    if p.variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {p.variant!r}")
    if p.window is None or p.sigma is None:
        from .lattice import estimate_period  # (torch: not on the CLI's start-up path, which reads PRESETS)

        est = estimate_period(_finite(image))
        period = est.period if est.found else 8.0
        if p.window is None:
            w = max(5, int(round(2 * period)))
            p = replace(p, window=w + (1 - w % 2))  # odd: centred
        if p.sigma is None:
            p = replace(p, sigma=max(2.0, round(period, 1)))
    if p.radius is None and p.variant != "plain":
        p = replace(p, radius=DEFAULT_RADIUS[p.variant])
    if p.window < 1:
        raise ValueError(f"window must be at least 1 px, got {p.window}")
    if not 0 <= p.threshold <= 255:
        raise ValueError(f"threshold must be within 0..255, got {p.threshold}")
    if not p.sigma >= 0:  # 0: no blur
        raise ValueError(f"sigma must be 0 (no blur) or more px, got {p.sigma}")
    if p.variant != "plain" and p.radius < 1:
        raise ValueError(f"the {p.variant} variant's radius must be at least 1 px, got {p.radius}")
    return p


def _finite(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2 or 0 in arr.shape:
        raise MaskError(f"a dent mask needs a non-empty 2D image, got shape {arr.shape}")
    if arr.dtype.kind not in "uif":
        raise MaskError(f"a dent mask needs a numeric image, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            raise MaskError("the image has no finite pixels (all NaN or Inf)")
        arr = np.where(finite, arr, np.median(arr[finite]))
    return arr


def dent_mask(image, params: MaskParams | None = None) -> np.ndarray:
    """The dent mask of a 2D image: float32, 0..255, large where the image is darker.

    NaN/Inf pixels are treated as the median (the caller reports them); a flat image
    raises :class:`MaskError`.
    """
    img = _finite(image)
    p = resolve_params(img, params)
    m = normalize_255(smooth(subtract_mean(img), p.window, p.smoothing), p.reference)
    m = gaussian_blur(threshold_below(m, p.threshold), p.sigma)
    m[m < 1.0] = 0.0  # blur tails below 1/255 would thin the whole specimen imperceptibly
    if p.variant == "min":
        m = chebyshev_min(m, p.radius)
    elif p.variant == "mean":
        m = chebyshev_mean(m, p.radius)
    return np.clip(m, 0, 255).astype(np.float32)


def apply_mask(target: np.ndarray, mask: np.ndarray, depth: float = 0.4) -> np.ndarray:
    """Thin ``target`` where ``mask`` is large: ``target * (1 - depth * mask / 255)``."""
    if target.shape != mask.shape:
        raise ValueError(f"target {target.shape} and mask {mask.shape} must have the same shape")
    if not 0 <= depth < 1:
        raise ValueError(f"depth must be within [0, 1), got {depth}")
    return (target * (1.0 - depth * np.clip(mask, 0, 255) / 255.0)).astype(np.float32)


def mask_region(mask: np.ndarray, threshold: float = 128.0) -> np.ndarray:
    """Where the dent is, by a mask's reading: at least half the threshold (the middle of its soft edge)."""
    return mask >= threshold / 2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean regions."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
