"""Crystal structures from ase projected into columns, and the geometry helpers that tile and scatter them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ._types import zweight


# --------------------------------------------------------------------------- structures (ase)
@dataclass(frozen=True)
class Projection:
    """A crystal projected along a zone axis: 2D cell (Å, rows are vectors in (x, y)) and columns."""

    cell: np.ndarray
    frac: np.ndarray  # (M, 2) fractional positions of the columns in the cell
    weight: np.ndarray  # (M,) sum of Z^1.7 per cell repeat along the beam
    spacing: float  # Å that ``period`` px stands for


def _project(atoms, spacing: float) -> Projection:
    """Columns of an ase ``Atoms`` periodic cell seen along its third axis."""
    frac = atoms.get_scaled_positions(wrap=True)[:, :2]
    key = np.round(frac % 1.0, 3) % 1.0
    cols: dict[tuple[float, float], float] = {}
    for (u, v), z in zip(map(tuple, key), atoms.get_atomic_numbers()):
        cols[(u, v)] = cols.get((u, v), 0.0) + float(zweight(z))
    uv = np.array(list(cols), dtype=np.float64)
    return Projection(np.asarray(atoms.cell)[:2, :2].copy(), uv, np.array(list(cols.values())), spacing)


@lru_cache(maxsize=None)
def structure(name: str) -> Projection:
    """A named zone-axis projection: 'SrTiO3' [001], 'MoS2' (2H) [001], or 'perovskite' (A and B only)."""
    from ase.build import mx2
    from ase.spacegroup import crystal

    if name == "SrTiO3":
        a = 3.905
        atoms = crystal(["Sr", "Ti", "O"], [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221, cellpar=[a, a, a, 90, 90, 90])
        return _project(atoms, a)
    if name == "MoS2":
        atoms = mx2("MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=5.0)
        return _project(atoms, 3.18)
    if name == "perovskite":  # heavy A at the corner, light B at the centre; B's weight is set per column
        a = 3.905
        atoms = crystal(["Sr", "Ti"], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=221, cellpar=[a, a, a, 90, 90, 90])
        return _project(atoms, a)
    raise ValueError(f"unknown structure {name!r}")


@lru_cache(maxsize=8)
def _au_particle(layers: int) -> tuple[np.ndarray, np.ndarray]:
    """A truncated-octahedral Au particle (ase.cluster) projected along [001]: column (x, y) in Å and atom counts."""
    from ase.cluster import Octahedron

    atoms = Octahedron("Au", length=layers, cutoff=max(1, layers // 3), latticeconstant=4.08)
    xy = atoms.positions[:, :2] - atoms.positions[:, :2].mean(axis=0)
    key = np.round(xy / 0.01).astype(np.int64)
    uniq, counts = np.unique(key, axis=0, return_counts=True)
    return uniq * 0.01, counts.astype(np.float64)


# --------------------------------------------------------------------------- geometry helpers
def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _tile(proj: Projection, px_per_a: float, angle: float, shape: tuple[int, int], origin: np.ndarray, margin: float):
    """Every column of the projected crystal covering ``shape`` (+margin): (row, col) px, basis index."""
    cell = proj.cell @ _rotation(angle).T * px_per_a  # rows: vectors in (x, y) px
    vecs = cell[:, ::-1]  # to (row, col)
    h, w = shape
    corners = np.array([[-margin, -margin], [-margin, w + margin], [h + margin, -margin], [h + margin, w + margin]]) - origin
    uv = corners @ np.linalg.inv(vecs)
    lo, hi = np.floor(uv.min(axis=0)) - 1, np.ceil(uv.max(axis=0)) + 1
    iu, iv = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    cells = np.stack([iu.ravel(), iv.ravel()], axis=1)
    pos = (cells[:, None, :] + proj.frac[None, :, :]) @ vecs + origin
    idx = np.broadcast_to(np.arange(len(proj.frac)), pos.shape[:2])
    pos, idx = pos.reshape(-1, 2), idx.ravel()
    keep = (pos[:, 0] > -margin) & (pos[:, 0] < h + margin) & (pos[:, 1] > -margin) & (pos[:, 1] < w + margin)
    return pos[keep], idx[keep]


def _poisson_disc(rng: np.random.Generator, shape: tuple[int, int], dmin: float, margin: float) -> np.ndarray:
    """Random points at least ``dmin`` apart (dart throwing on a grid, vectorised in rounds)."""
    h, w = shape[0] + 2 * margin, shape[1] + 2 * margin
    target = int(0.55 * h * w / dmin**2)
    pts = np.zeros((0, 2))
    for _ in range(12):
        cand = rng.uniform([0, 0], [h, w], size=(target, 2))
        if len(pts):
            from scipy.spatial import cKDTree

            d, _ = cKDTree(pts).query(cand, k=1)
            cand = cand[d >= dmin]
        # resolve conflicts among the candidates themselves: keep the first of each close pair
        if len(cand) > 1:
            from scipy.spatial import cKDTree

            pairs = cKDTree(cand).query_pairs(dmin, output_type="ndarray")
            drop = np.zeros(len(cand), bool)
            for i, j in pairs:
                if not drop[i]:
                    drop[j] = True
            cand = cand[~drop]
        pts = np.concatenate([pts, cand])
        if len(pts) >= target:
            break
    return pts - margin


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A smooth random field of unit std, correlation length ``scale`` px."""
    small = (max(4, int(shape[0] / scale) + 3), max(4, int(shape[1] / scale) + 3))
    f = ndimage.zoom(rng.normal(size=small), (shape[0] / small[0] * 1.0001, shape[1] / small[1] * 1.0001), order=3)[: shape[0], : shape[1]]
    return (f - f.mean()) / max(f.std(), 1e-12)
