"""Specimen scenes with labelled truth: what real STEM ADF images hold, for the fidelity benchmark.

:mod:`.simulate` makes the training-style picture (one ideal lattice and a dent). A scene here
holds what specimens hold, each column labelled so a benchmark can ask whether a denoiser kept it:

* **Structures** come from ``ase`` (the atomistic field's structure library): SrTiO3 [001]
  (Sr, TiO and O columns), 2H-MoS2 [001] (Mo and S2 columns), Au nanoparticles
  (``ase.cluster``) projected along [001]. Each projected column's weight is the sum of Z^1.7
  over its atoms (incoherent ADF contrast), so a microscopist's intensity ratios hold: an O
  column is 7 % of a Sr column, S2 39 % of Mo.
* **Defects**: vacancies (empty sites) on heavy and light sublattices, partial occupancy,
  substitutional dopants (W in MoS2) and adatoms off the lattice (Pt on hollow sites),
  column-to-column thickness variation and a smooth thickness field, thickness wedges.
* **Not a crystal**: amorphous films (random atoms at a minimum distance), vacuum,
  particles on a weak amorphous support, grain boundaries between rotated grains, edges.
* **Optics**: Gaussian columns whose width varies relative to the period, plus a weak broad
  probe tail around each.
* **Scan and detector**: per-row offsets, fast-scan jitter, flyback compression at the left
  edge, linear drift, line-to-line gain changes (streaks), Poisson counts, detector gain and
  offset, read noise, hot pixels and 16-bit saturation. ``noisy`` is uint16 detector values,
  never counts.

Truth per scene: ``clean`` (expected electron counts of the specimen in the scanned
geometry, what a perfect denoiser returns up to gain and offset), ``expected`` (the mean of
``noisy``: ``clean`` through line gains, detector gain and offset), every column's position
in image pixels with its label, weight and the weight its site holds when occupied, the dent
map and a region mask (vacuum / crystal / amorphous). Same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .simulate import _dent_map

# column labels
HEAVY, LIGHT, VACANCY_HEAVY, VACANCY_LIGHT, DOPANT, ADATOM, AMORPHOUS = range(1, 8)
LABEL_NAMES = {HEAVY: "heavy", LIGHT: "light", VACANCY_HEAVY: "vacancy (heavy site)", VACANCY_LIGHT: "vacancy (light site)",
               DOPANT: "dopant", ADATOM: "adatom", AMORPHOUS: "amorphous"}
# region mask values
VACUUM, CRYSTAL, AMORPHOUS_REGION = 0, 1, 2
KINDS = ("vacancies", "dopants", "columns", "amorphous", "particle", "interface", "scan")
LIGHT_BANDS = ((0.05, 0.15), (0.15, 0.25), (0.25, 0.35))  # light/heavy weight ratios of the "columns" scene


def zweight(z: float | np.ndarray) -> float | np.ndarray:
    """ADF intensity of one atom of atomic number ``z`` (incoherent, Z^1.7)."""
    return np.asarray(z, dtype=np.float64) ** 1.7


@dataclass(frozen=True)
class SceneParams:
    """One scene: its content (``kind``), scale, dose, and the scan and detector chain."""

    kind: str = "vacancies"
    size: tuple[int, int] = (384, 384)
    period: float = 12.0  # px: the main lattice's spacing (SrTiO3 a, MoS2 a, Au column spacing)
    angle: float = 0.0  # lattice rotation, degrees
    width: float = 0.11  # column sigma as a fraction of the period
    tail: float = 0.06  # weight of the broad probe tail (sigma 4x the column's) around each column
    dose: float = 5.0  # mean electron counts per px over the specimen
    gain: float = 40.0  # detector values per electron
    offset: float = 2000.0  # detector value of no signal
    read_noise: float = 30.0  # detector values, std
    line_gain: float = 0.01  # std of the per-row gain change (fraction)
    row_offset: float = 0.15  # std of per-row x offsets, px
    jitter: float = 0.05  # std of per-pixel x jitter, px
    flyback: float = 1.5  # px of compression at the left edge (decays over 8 % of the width)
    drift: tuple[float, float] = (0.0, 0.0)  # px over the frame (rows, cols)
    hot_pixels: float = 0.0  # share of pixels that read saturated
    vacancy: float = 0.04  # share of empty sites per sublattice
    dopants: int = 10  # dopants plus adatoms in the "dopants" scene
    dents: int = 0
    dent_depth: float = 0.35
    seed: int = 0

    def __post_init__(self) -> None:
        size = (int(self.size), int(self.size)) if np.isscalar(self.size) else (int(self.size[0]), int(self.size[1]))
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "drift", (float(self.drift[0]), float(self.drift[1])))
        if self.kind not in KINDS:
            raise ValueError(f"scene kind must be one of {KINDS}, not {self.kind!r}")
        if min(size) < 32:
            raise ValueError(f"scene size must be at least 32 px per side, got {size}")
        if not 2.0 <= self.period <= 96.0:
            raise ValueError(f"period must be between 2 and 96 px, got {self.period}")
        if not (0 < self.dose < 1e7 and 0 < self.gain < 1e6):
            raise ValueError(f"dose (counts/px) must be in (0, 1e7) and gain in (0, 1e6), got dose {self.dose}, gain {self.gain}")
        if not 0 < self.width < 0.5:
            raise ValueError(f"width is the column sigma as a share of the period, in (0, 0.5); got {self.width}")
        if not 0 <= self.dent_depth < 1:
            raise ValueError(f"dent_depth must be in [0, 1), got {self.dent_depth}")
        for name in ("tail", "offset", "read_noise", "line_gain", "row_offset", "jitter", "flyback", "hot_pixels", "vacancy"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"], d["drift"] = list(self.size), list(self.drift)
        return d


@dataclass
class Scene:
    """A simulated specimen scene and its truth (see the module docstring)."""

    noisy: np.ndarray  # uint16 detector values
    clean: np.ndarray  # float32 expected electron counts of the specimen
    expected: np.ndarray  # float32 mean detector value of ``noisy``
    dent: np.ndarray  # float32 in [0, 1]
    region: np.ndarray  # uint8: VACUUM, CRYSTAL, AMORPHOUS_REGION
    positions: np.ndarray  # (N, 2) image px (row, col) of every column, empty sites included
    labels: np.ndarray  # (N,) int8 label codes
    weights: np.ndarray  # (N,) Z^1.7 weight of the column as simulated (0 for a vacancy)
    site_weights: np.ndarray  # (N,) weight of the site when occupied by its matrix column (0 off the lattice)
    band: np.ndarray  # (N,) light-column band index into LIGHT_BANDS, -1 where it does not apply
    sublattice: np.ndarray  # (N,) which column of the crystal's basis the site is, -1 off the lattice
    sigma: float  # column sigma, px
    params: SceneParams = field(repr=False)
    _forward: object = field(default=None, repr=False)

    def render(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clean, expected) of this very scene with ``weights`` for its columns instead of ``self.weights``:
        the images a denoiser would give if it filled a vacancy or erased a dopant."""
        weights = np.asarray(weights, np.float64)
        if weights.shape != self.weights.shape:
            raise ValueError(f"need one weight per column ({self.weights.shape}), got {weights.shape}")
        return self._forward(weights)

    @property
    def period(self) -> float:
        return self.params.period

    def counts(self, image: np.ndarray) -> np.ndarray:
        """Detector values to electron counts with this scene's true gain and offset."""
        return (np.asarray(image, dtype=np.float64) - self.params.offset) / self.params.gain


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


_CONTENT = {"vacancies": _content_vacancies, "dopants": _content_dopants, "columns": _content_columns,
            "amorphous": _content_amorphous, "particle": _content_particle, "interface": _content_interface,
            "scan": _content_vacancies}


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


# --------------------------------------------------------------------------- training sets
BENCHMARK_SEEDS = range(9000, 10000)  # the fidelity benchmark's scenes; a training set refuses them
# share of each kind in a training set: rare single-atom content (dopants, vacancies, light columns) gets more than its share
TRAINING_KINDS = {"vacancies": 0.2, "dopants": 0.22, "columns": 0.16, "amorphous": 0.12, "particle": 0.12, "interface": 0.1,
                  "scan": 0.08}


MAX_TRAINING_DOSE = 60.0  # counts/px: above it the brightest columns saturate uint16 at the highest drawn gains


def training_params(seed: int, size: int = 384, periods: tuple[float, float] = (6.0, 24.0),
                    doses: tuple[float, float] = (0.8, 40.0)) -> SceneParams:
    """One randomly drawn scene of a training set: kind, scale, dose, optics, scan and detector all varied.

    Periods and doses are drawn log-uniformly from their ranges; seeds of the fidelity benchmark are refused.
    """
    if seed in BENCHMARK_SEEDS:
        raise ValueError(f"seed {seed} belongs to the fidelity benchmark ({BENCHMARK_SEEDS.start}-{BENCHMARK_SEEDS.stop - 1}); "
                         "use other seeds for training data")
    if not 2 <= periods[0] <= periods[1] <= 96:
        raise ValueError(f"the period range must lie within 2-96 px, low to high; got {periods[0]:g} {periods[1]:g}")
    if not 0 < doses[0] <= doses[1] <= MAX_TRAINING_DOSE:
        raise ValueError(f"the dose range must lie within 0-{MAX_TRAINING_DOSE:g} counts/px, low to high; got {doses[0]:g} {doses[1]:g} "
                         "(higher doses saturate the 16-bit detector values at the drawn gains)")
    if not 32 <= size <= 4096:
        raise ValueError(f"the scene size must be 32-4096 px, not {size}")
    rng = np.random.default_rng([seed, 7_000_001])
    kinds = list(TRAINING_KINDS)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(list(TRAINING_KINDS.values())) / sum(TRAINING_KINDS.values())))]
    loguni = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    gain = loguni(5.0, 100.0)
    return SceneParams(
        kind=kind, size=(size, size), period=loguni(*periods), angle=float(rng.uniform(0, 90)), width=float(rng.uniform(0.08, 0.14)),
        tail=float(rng.uniform(0.0, 0.1)), dose=loguni(*doses), gain=gain, offset=float(rng.uniform(0, 4000)),
        read_noise=float(gain * rng.uniform(0, 1.5)), line_gain=float(rng.uniform(0, 0.05)), row_offset=float(rng.uniform(0, 0.5)),
        jitter=float(rng.uniform(0, 0.2)), flyback=float(rng.uniform(0, 4)), drift=tuple(rng.uniform(-8, 8, 2)),
        hot_pixels=float(rng.choice([0.0, 1e-4, 3e-4])), vacancy=float(rng.uniform(0.02, 0.15)), dopants=int(rng.integers(8, 40)),
        dents=int(rng.choice([0, 1, 1, 2])), dent_depth=float(rng.uniform(0.15, 0.5)), seed=seed,
    )


def target(scene: Scene) -> np.ndarray:
    """What a denoiser should return for ``scene.noisy``, in its detector units: the specimen's counts through the detector's
    gain and offset, without noise, hot pixels or line-gain streaks (float32)."""
    p = scene.params
    return (scene.clean * np.float32(p.gain) + np.float32(p.offset)).astype(np.float32)


def _write_one(args) -> dict:
    from .io import write_tiff

    out, name, params = args
    scene = make_scene(params)
    write_tiff(out / "noisy" / f"{name}.tif", scene.noisy, dtype="uint16", overwrite=True)
    write_tiff(out / "clean" / f"{name}.tif", target(scene), overwrite=True)
    return {"name": name, **params.to_dict()}


def write_training_set(out, n: int, seed: int, *, size: int = 384, periods: tuple[float, float] = (6.0, 24.0),
                       doses: tuple[float, float] = (0.8, 40.0), jobs: int = 1, prefix: str = "scene", overwrite: bool = False):
    """Write ``n`` drawn scenes as OUT/noisy/NAME.tif (uint16) and OUT/clean/NAME.tif (float32 :func:`target`), with
    OUT/scenes.json listing every scene's parameters, written last (a folder without it holds a partial set). A job
    (:mod:`.jobs`): an :class:`Event` per scene written; returns the JSON's path.

    An existing set (or any TIFF in OUT/noisy or OUT/clean) is refused unless ``overwrite``; then the old set's files
    are removed first, so no stale pair stays behind. TIFFs of other names are never removed: such a folder is refused.
    """
    import json
    from pathlib import Path

    from .jobs import Event

    out = Path(out)
    if n < 1:
        raise ValueError("a training set needs at least one scene")
    todo = [(out, f"{prefix}_{i:05d}", training_params(seed + i, size, periods, doses)) for i in range(n)]
    bad = [t[2].seed for t in todo if t[2].seed in BENCHMARK_SEEDS]
    if bad:
        raise ValueError(f"seeds {bad[0]}... belong to the fidelity benchmark; pick a --seed range outside 9000-9999")
    meta = out / "scenes.json"
    old = [p for sub in ("noisy", "clean") if (out / sub).is_dir() for p in (out / sub).iterdir()]
    foreign = [p for p in old if not (p.name.startswith(f"{prefix}_") and p.suffix == ".tif")]
    if foreign:
        raise ValueError(f"'{out}' holds other files in noisy/ or clean/ (e.g. '{foreign[0]}'); choose another folder")
    if (old or meta.exists()) and not overwrite:
        what = "a scene set" if meta.exists() else f"a partial scene set ({len(old) // 2} pairs, no scenes.json)"
        raise ValueError(f"'{out}' already holds {what}; use --overwrite to replace it or choose another folder")
    for p in old:
        p.unlink()
    meta.unlink(missing_ok=True)
    records = []
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            for rec in pool.map(_write_one, todo, chunksize=4):
                records.append(rec)
                yield Event(len(records), n, "scenes", rec["name"])
    else:
        for t in todo:
            records.append(_write_one(t))
            yield Event(len(records), n, "scenes", t[1])
    meta.write_text(json.dumps({"seed": seed, "size": size, "periods": list(periods), "doses": list(doses), "scenes": records},
                               indent=1) + "\n")
    return meta
