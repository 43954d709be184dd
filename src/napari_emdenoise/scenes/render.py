"""Image formation: the scan map, rendering of columns and the detector chain; :func:`make_scene`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from ..simulate import _dent_map
from ._types import KINDS, VACUUM, Scene, SceneParams
from .content import _CONTENT


# --------------------------------------------------------------------------- image formation
def _scan_map(p: SceneParams, rng):
    """Specimen (row, col) sampled by every image pixel, and the inverse for column positions."""
    h, w = p.size
    t = np.arange(h, dtype=np.float64) / max(h - 1, 1)
    row_shift = rng.normal(0.0, p.row_offset, size=h) if p.row_offset > 0 else np.zeros(h)
    cols = np.arange(w, dtype=np.float64)
    fly = p.flyback * np.exp(-cols / max(0.08 * w, 1.0))  # the beam lags at the start of each line
    sr = np.arange(h, dtype=np.float64)[:, None] + p.drift[0] * t[:, None] + 0 * cols[None, :]
    sc = cols[None, :] - fly[None, :] + p.drift[1] * t[:, None] + row_shift[:, None]
    if p.jitter > 0:
        sc = sc + rng.normal(0.0, p.jitter, size=(h, w))

    def to_image(pos: np.ndarray) -> np.ndarray:
        r = pos[:, 0] / (1.0 + p.drift[0] / max(h - 1, 1))
        rr = np.clip(np.rint(r).astype(int), 0, h - 1)
        c_spec = pos[:, 1] - p.drift[1] * r / max(h - 1, 1) - row_shift[rr]
        c = np.interp(c_spec, cols - fly, cols, left=np.nan, right=np.nan)  # invert c - fly(c)
        c = np.where(np.isnan(c), c_spec + np.where(c_spec < w / 2, p.flyback, 0.0), c)
        return np.stack([r, c], axis=1)

    return sr, sc, to_image


def _render(sr, sc, pos_img, pos_spec, weight, sigma):
    """Sum of Gaussian columns evaluated at each pixel's specimen coordinates (windows around each column)."""
    h, w = sr.shape
    out = np.zeros(h * w, dtype=np.float64)
    keep = weight > 0
    pos_img, pos_spec, weight = pos_img[keep], pos_spec[keep], weight[keep]
    r = int(np.ceil(4 * sigma + 2))
    d = np.arange(-r, r + 1)
    for lo in range(0, len(weight), 4096):
        pi, ps, wt = pos_img[lo : lo + 4096], pos_spec[lo : lo + 4096], weight[lo : lo + 4096]
        rows = np.rint(pi[:, 0]).astype(int)[:, None, None] + d[None, :, None]
        cols = np.rint(pi[:, 1]).astype(int)[:, None, None] + d[None, None, :]
        rows, cols = np.broadcast_arrays(rows, cols)
        ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        flat = rows[ok] * w + cols[ok]
        n_idx = np.broadcast_to(np.arange(len(wt))[:, None, None], rows.shape)[ok]
        d2 = (sr.ravel()[flat] - ps[n_idx, 0]) ** 2 + (sc.ravel()[flat] - ps[n_idx, 1]) ** 2
        out += np.bincount(flat, weights=wt[n_idx] * np.exp(-d2 / (2 * sigma * sigma)), minlength=h * w)
    return out.reshape(h, w)


def make_scene(params: SceneParams | None = None, **kwargs) -> Scene:
    """Simulate one scene; ``make_scene(kind="dopants", period=10, dose=3, seed=4)`` works too."""
    p = params if params is not None else SceneParams(**kwargs)
    if params is not None and kwargs:
        p = replace(params, **kwargs)
    rng = np.random.default_rng([p.seed, KINDS.index(p.kind)])
    if p.kind == "scan":  # the same specimen as "vacancies" under a harsh scan and detector chain
        p = replace(p, row_offset=max(p.row_offset, 0.5), line_gain=max(p.line_gain, 0.05), jitter=max(p.jitter, 0.15),
                    flyback=max(p.flyback, 3.0), drift=p.drift if any(p.drift) else (4.0, -6.0),
                    hot_pixels=max(p.hot_pixels, 2e-4), dents=max(p.dents, 1))
    content = _CONTENT[p.kind](p, rng)
    sr, sc, to_image = _scan_map(p, rng)
    sigma = p.width * p.period
    # dents thin the specimen: columns and background alike
    centres = rng.uniform([0.25 * p.size[0], 0.25 * p.size[1]], [0.75 * p.size[0], 0.75 * p.size[1]], size=(p.dents, 2))
    dent = _dent_map(sr, sc, centres, 0.22 * min(p.size)) if p.dents else np.zeros(p.size)
    pos_img = to_image(content.pos)
    thick_at = 1.0 - p.dent_depth * (dent[np.clip(np.rint(pos_img[:, 0]).astype(int), 0, p.size[0] - 1),
                                          np.clip(np.rint(pos_img[:, 1]).astype(int), 0, p.size[1] - 1)])
    weight = content.weight * thick_at
    background = content.background * (1.0 - p.dent_depth * dent)
    specimen = content.region != VACUUM

    def form(w: np.ndarray) -> np.ndarray:
        cols = _render(sr, sc, pos_img, content.pos, w, sigma)
        return cols + p.tail * ndimage.gaussian_filter(cols, 4 * sigma, mode="constant") + background

    signal = form(weight)
    scale = p.dose / max(float(signal[specimen].mean()) if specimen.any() else float(signal.mean()), 1e-12)
    row_gain = np.clip(1.0 + p.line_gain * rng.normal(size=(p.size[0], 1)), 0.5, 1.5)
    clean = signal * scale
    counts = rng.poisson(clean * row_gain).astype(np.float64)
    data = p.gain * counts + p.offset + (rng.normal(0.0, p.read_noise, size=p.size) if p.read_noise > 0 else 0.0)
    if p.hot_pixels > 0:
        hot = rng.random(p.size) < p.hot_pixels
        data[hot] = 65535.0
    noisy = np.clip(np.rint(data), 0, 65535).astype(np.uint16)

    def forward(column_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clean, expected) of this scene with other weights for its columns (all of them, in content order)."""
        c = form(np.asarray(column_weights, np.float64)) * scale
        return c.astype(np.float32), np.clip(p.gain * c * row_gain + p.offset, 0, 65535).astype(np.float32)

    inside = (pos_img[:, 0] >= 0) & (pos_img[:, 0] <= p.size[0] - 1) & (pos_img[:, 1] >= 0) & (pos_img[:, 1] <= p.size[1] - 1)
    clean32 = clean.astype(np.float32)
    expected = np.clip(p.gain * clean * row_gain + p.offset, 0, 65535).astype(np.float32)

    def forward_inside(w_inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w_all = weight.copy()
        w_all[inside] = w_inside
        return forward(w_all)

    return Scene(
        noisy=noisy, clean=clean32, expected=expected, dent=dent.astype(np.float32),
        region=content.region, positions=pos_img[inside], labels=content.label[inside], weights=weight[inside],
        site_weights=(content.site * thick_at)[inside], band=content.band[inside], sublattice=content.sub[inside], sigma=float(sigma), params=p,
        _forward=forward_inside,
    )
