"""What each kind of scene holds: columns with labels, weights and sites, before image formation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ._types import (
    ADATOM,
    AMORPHOUS,
    AMORPHOUS_REGION,
    CRYSTAL,
    DOPANT,
    HEAVY,
    LIGHT,
    LIGHT_BANDS,
    VACANCY_HEAVY,
    VACANCY_LIGHT,
    VACUUM,
    SceneParams,
    zweight,
)
from .structures import (
    _au_particle,
    _poisson_disc,
    _rotation,
    _smooth_field,
    _tile,
    structure,
)


# --------------------------------------------------------------------------- scene contents
@dataclass
class _Content:
    pos: np.ndarray  # specimen px (row, col)
    weight: np.ndarray
    site: np.ndarray
    label: np.ndarray
    band: np.ndarray
    sub: np.ndarray  # sublattice (basis column index), -1 off the lattice
    region: np.ndarray  # uint8 map
    background: np.ndarray  # float map, Z^1.7 units per px (amorphous film and support haze)


def _columns(pos, weight, site, label, band=None, sub=None):
    n = len(pos)
    return [np.asarray(pos, float).reshape(n, 2), np.asarray(weight, float), np.asarray(site, float),
            np.asarray(label, np.int8), np.full(n, -1, np.int8) if band is None else np.asarray(band, np.int8),
            np.full(n, -1, np.int16) if sub is None else np.asarray(sub, np.int16)]


def _crystal(p: SceneParams, rng, name: str, angle: float | None = None, origin=None):
    proj = structure(name)
    ppa = p.period / proj.spacing
    origin = rng.uniform(0, p.period, size=2) if origin is None else origin
    pos, idx = _tile(proj, ppa, p.angle if angle is None else angle, p.size, origin, 4 * p.width * p.period + 6)
    w = proj.weight[idx]
    heavy = w >= 0.4 * proj.weight.max()  # Sr and TiO in SrTiO3, Mo in MoS2; O (7 %) and S2 (39 %) are light
    return pos, w, heavy, idx


def _vacate(rng, weight, heavy, share):
    """Empty ``share`` of each sublattice's sites: returns the labels."""
    label = np.where(heavy, HEAVY, LIGHT).astype(np.int8)
    for sub, vac in ((heavy, VACANCY_HEAVY), (~heavy, VACANCY_LIGHT)):
        idx = np.flatnonzero(sub)
        n = int(round(share * len(idx)))
        if n:
            label[rng.choice(idx, size=n, replace=False)] = vac
    return label


def _thickness(rng, p: SceneParams, pos, spread=0.04, field_std=0.06):
    """Column-to-column thickness variation: a smooth field plus per-column scatter."""
    f = _smooth_field(rng, p.size, 6 * p.period)
    rc = np.clip(np.rint(pos).astype(int), 0, np.array(p.size) - 1)
    return np.clip(1.0 + field_std * f[rc[:, 0], rc[:, 1]] + spread * rng.normal(size=len(pos)), 0.5, 1.5)


def _content_vacancies(p: SceneParams, rng) -> _Content:
    pos, w, heavy, sub = _crystal(p, rng, "SrTiO3")
    label = _vacate(rng, w, heavy, p.vacancy)
    site = w * _thickness(rng, p, pos)
    # partial occupancy on a few heavy columns: 40-80 % of the column's atoms
    part = np.flatnonzero(label == HEAVY)
    part = rng.choice(part, size=max(1, len(part) // 25), replace=False)
    weight = site.copy()
    weight[part] *= rng.uniform(0.4, 0.8, size=len(part))
    weight[(label == VACANCY_HEAVY) | (label == VACANCY_LIGHT)] = 0.0
    cols = _columns(pos, weight, site, label, sub=sub)
    return _Content(*cols, np.full(p.size, CRYSTAL, np.uint8), np.full(p.size, 0.02 * w.max()))


def _content_dopants(p: SceneParams, rng) -> _Content:
    proj = structure("MoS2")
    pos, w, heavy, sub = _crystal(p, rng, "MoS2")
    label = np.where(heavy, HEAVY, LIGHT).astype(np.int8)
    site = w * _thickness(rng, p, pos, spread=0.03, field_std=0.04)
    weight = site.copy()
    h, wd = p.size
    inner = (pos[:, 0] > 0.1 * h) & (pos[:, 0] < 0.9 * h) & (pos[:, 1] > 0.1 * wd) & (pos[:, 1] < 0.9 * wd)
    n_sub = (p.dopants + 1) // 2
    n_ad = p.dopants - n_sub
    # substitutional W on Mo sites, well apart from each other
    cand = rng.permutation(np.flatnonzero(heavy & inner))
    chosen: list[int] = []
    for i in cand:
        if all(np.hypot(*(pos[i] - pos[j])) > 2.5 * p.period for j in chosen):
            chosen.append(i)
        if len(chosen) == n_sub:
            break
    label[chosen] = DOPANT
    weight[chosen] = zweight(74) * site[chosen] / w[chosen]  # W replaces Mo
    # Pt adatoms on hollow sites: the third of each hexagon that holds neither Mo nor S
    used = proj.frac % 1.0
    hollow = next(t for t in np.array([[1 / 3, 2 / 3], [2 / 3, 1 / 3]]) if not np.any(np.all(np.abs(used - t) < 0.02, axis=1)))
    step = (hollow - proj.frac[np.argmax(proj.weight)]) @ (proj.cell @ _rotation(p.angle).T * p.period / proj.spacing)[:, ::-1]
    ad: list[np.ndarray] = []
    for i in rng.permutation(np.flatnonzero(heavy & inner & (label == HEAVY))):
        c = pos[i] + step
        if all(np.hypot(*(c - q)) > 2.5 * p.period for q in [pos[j] for j in chosen] + ad):
            ad.append(c)
        if len(ad) == n_ad:
            break
    cols = _columns(pos, weight, site, label, sub=sub)
    if ad:
        extra = _columns(np.array(ad), np.full(len(ad), zweight(78)), np.zeros(len(ad)), np.full(len(ad), ADATOM))
        cols = [np.concatenate([a, b]) for a, b in zip(cols, extra)]
    return _Content(*cols, np.full(p.size, CRYSTAL, np.uint8), np.full(p.size, 0.01 * w.max()))


def _content_columns(p: SceneParams, rng) -> _Content:
    """Heavy A columns and light B columns whose ratio steps through LIGHT_BANDS across the field."""
    pos, w, heavy, sub = _crystal(p, rng, "perovskite")
    t = _thickness(rng, p, pos, spread=0.02, field_std=0.03)
    heavy_w = zweight(38)
    band = np.clip((pos[:, 1] / p.size[1] * len(LIGHT_BANDS)).astype(int), 0, len(LIGHT_BANDS) - 1)
    lo, hi = np.array(LIGHT_BANDS).T
    ratio = rng.uniform(lo[band], hi[band])
    site = np.where(heavy, heavy_w, ratio * heavy_w) * t
    label = np.where(heavy, HEAVY, LIGHT)
    band = np.where(heavy, -1, band)
    return _Content(*_columns(pos, site, site, label, band, sub), np.full(p.size, CRYSTAL, np.uint8), np.full(p.size, 0.02 * heavy_w))


def _film_mask(rng, p: SceneParams, cover: float, scale: float) -> np.ndarray:
    """An irregular film covering about ``cover`` of the field (threshold of a smooth field)."""
    f = _smooth_field(rng, p.size, scale) + np.linspace(1.2, -1.2, p.size[1])[None, :]
    return f > np.quantile(f, 1.0 - cover)


def _amorphous_atoms(rng, p: SceneParams, mask: np.ndarray, dmin: float, zs: tuple[int, ...], depth: int):
    """Random projected atoms at least ``dmin`` px apart inside ``mask``; each sums ``depth`` random atoms."""
    pts = _poisson_disc(rng, p.size, dmin, margin=2.0)
    rc = np.clip(np.rint(pts).astype(int), 0, np.array(p.size) - 1)
    pts = pts[mask[rc[:, 0], rc[:, 1]]]
    weight = zweight(rng.choice(zs, size=(len(pts), depth))).sum(axis=1)
    return pts, weight


def _content_amorphous(p: SceneParams, rng) -> _Content:
    film = _film_mask(rng, p, 0.65, 4 * p.period + 20)
    pts, weight = _amorphous_atoms(rng, p, film, 0.45 * p.period, (8, 14, 72), 2)
    region = np.where(film, AMORPHOUS_REGION, VACUUM).astype(np.uint8)
    bg = np.where(film, 0.03 * zweight(72), 0.0)
    return _Content(*_columns(pts, weight, weight, np.full(len(pts), AMORPHOUS)), region, ndimage.gaussian_filter(bg, 2.0))


def _content_particle(p: SceneParams, rng) -> _Content:
    support = _film_mask(rng, p, 0.75, 4 * p.period + 20)
    s_pts, s_w = _amorphous_atoms(rng, p, support, 0.3 * p.period, (6,), 3)  # thin carbon: weak
    ppa = p.period / 2.04  # [001] Au column spacing a/2
    layers = 5  # the largest particle about 45 % of the field across
    while layers < 40 and np.ptp(_au_particle(layers + 2)[0][:, 0]) * ppa < 0.45 * min(p.size):
        layers += 2
    xy, n = _au_particle(layers)
    rot = _rotation(p.angle)
    rc = (xy @ rot.T * ppa)[:, ::-1] + np.array(p.size) * np.array([0.5, 0.45]) + rng.uniform(-3, 3, 2)
    inside = (rc[:, 0] > 0) & (rc[:, 0] < p.size[0]) & (rc[:, 1] > 0) & (rc[:, 1] < p.size[1])
    rc, n = rc[inside], n[inside]
    w = n * zweight(79)
    label = np.full(len(rc), HEAVY)
    # the particle's footprint (columns dilated by half a spacing) is crystal
    region = np.where(support, AMORPHOUS_REGION, VACUUM).astype(np.uint8)
    foot = np.zeros(p.size, bool)
    ri = np.clip(np.rint(rc).astype(int), 0, np.array(p.size) - 1)
    foot[ri[:, 0], ri[:, 1]] = True
    foot = ndimage.binary_closing(ndimage.binary_dilation(foot, iterations=max(1, int(0.6 * p.period))), iterations=2)
    region[foot] = CRYSTAL
    keep = ~foot[np.clip(np.rint(s_pts[:, 0]).astype(int), 0, p.size[0] - 1), np.clip(np.rint(s_pts[:, 1]).astype(int), 0, p.size[1] - 1)]
    cols = _columns(rc, w, w, label)
    sup = _columns(s_pts[keep], s_w[keep], s_w[keep], np.full(int(keep.sum()), AMORPHOUS))
    bg = ndimage.gaussian_filter(np.where(support, 0.5 * zweight(6), 0.0), 2.0)
    return _Content(*[np.concatenate([a, b]) for a, b in zip(cols, sup)], region, bg)


def _content_interface(p: SceneParams, rng) -> _Content:
    """Two SrTiO3 grains rotated against each other, a thickness wedge, and an edge to vacuum."""
    h, w = p.size
    tilt = rng.uniform(12, 30)
    boundary_c = w * rng.uniform(0.4, 0.6)
    slope = np.tan(np.deg2rad(rng.uniform(-15, 15)))
    edge_r = h * rng.uniform(0.12, 0.2)
    parts = []
    for ang, left in ((p.angle, True), (p.angle + tilt, False)):
        pos, wgt, heavy, sub = _crystal(p, rng, "SrTiO3", angle=ang)
        bc = boundary_c + slope * (pos[:, 0] - h / 2)
        side = pos[:, 1] < bc - 0.25 * p.period if left else pos[:, 1] > bc + 0.25 * p.period
        keep = side & (pos[:, 0] > edge_r)
        parts.append((pos[keep], wgt[keep], heavy[keep], sub[keep]))
    pos = np.concatenate([q[0] for q in parts])
    wgt = np.concatenate([q[1] for q in parts])
    heavy = np.concatenate([q[2] for q in parts])
    sub = np.concatenate([q[3] for q in parts])
    wedge = np.clip((pos[:, 0] - edge_r) / (0.6 * h), 0.25, 1.0)  # thinner towards the edge
    site = wgt * wedge * _thickness(rng, p, pos, spread=0.03, field_std=0.0)
    label = np.where(heavy, HEAVY, LIGHT)
    rr = np.arange(h)[:, None] * np.ones((1, w))
    region = np.where(rr > edge_r - 0.3 * p.period, CRYSTAL, VACUUM).astype(np.uint8)
    bg = np.where(region == CRYSTAL, 0.02 * wgt.max() * np.clip((rr - edge_r) / (0.6 * h), 0.25, 1.0), 0.0)
    return _Content(*_columns(pos, site, site, label, sub=sub), region, ndimage.gaussian_filter(bg, 1.5))


def _content_lattice(p: SceneParams, rng) -> _Content:
    """A perfect crystal of one kind of column, square (the Sr sublattice of SrTiO3 [001]) or hexagonal (the Mo sublattice of
    MoS2 [001]): the ideal lattice a physicist simulates, with thickness variation and the scene's dents but nothing missing."""
    pos, w, _, sub = _crystal(p, rng, "SrTiO3" if rng.random() < 0.5 else "MoS2")
    keep = w >= 0.999 * w.max()
    pos, w, sub = pos[keep], w[keep], sub[keep]
    site = w * _thickness(rng, p, pos, spread=0.02, field_std=0.03)
    cols = _columns(pos, site, site, np.full(len(pos), HEAVY), sub=sub)
    return _Content(*cols, np.full(p.size, CRYSTAL, np.uint8), np.full(p.size, 0.02 * w.max()))


_CONTENT = {"vacancies": _content_vacancies, "dopants": _content_dopants, "columns": _content_columns,
            "amorphous": _content_amorphous, "particle": _content_particle, "interface": _content_interface,
            "scan": _content_vacancies, "lattice": _content_lattice}
