"""STEM ADF image formation: the project's own data for tests, samples, benchmarks and training.

The model, in the order it is applied:

1. **Lattice** — lattice vectors of length ``period`` px (the zoom level), rotated by
   ``angle`` degrees, with a random origin; a ``basis`` of columns at fractional cell
   positions, each with an atomic number ``Z``.
2. **Columns** — each column is a 2D Gaussian of width ``column_width`` (sigma, px) and
   peak ``Z ** 1.7`` (incoherent ADF contrast), on a constant ``background``.
3. **Dents** — thinner regions: a smooth map ``dent`` in [0, 1] (1 in the middle of a
   dent); the local thickness factor is ``1 - dent_depth * dent``, which scales both the
   columns and the background, so a dent is darker and columns stay where they are.
4. **Scan distortions** — each scan row is shifted in x by a random offset
   (``row_offset`` px, std), each pixel by a random x jitter (``jitter`` px, std), and
   the frame drifts linearly by ``drift`` = (dy, dx) px from the first to the last row.
   They move where the probe sampled, so truth and noisy image share the geometry.
5. **Dose** — the expected image is scaled so its mean is ``dose`` electron counts per
   px; the noisy image is Poisson(expected) plus Gaussian read noise (``read_noise``
   counts, std).

``clean`` is the expected counts (step 4 output, scaled), i.e. exactly the image the
noisy one scatters around. Everything is deterministic from ``seed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

LATTICES = ("square", "hexagonal", "rectangular")


MAX_SIDE = 16384  # px: a 16384^2 image and its truth already take 2 GiB


@dataclass
class SimParams:
    """Parameters of one simulated STEM ADF image (see the module docstring)."""

    size: tuple[int, int] = (256, 256)
    lattice: str = "square"
    period: float = 16.0
    aspect: float = 1.4
    angle: float = 0.0
    basis: Sequence[tuple[float, float, float]] = ((0.0, 0.0, 42.0),)
    column_width: float | None = None
    background: float = 0.05
    dents: int = 1
    dent_depth: float = 0.4
    dent_radius: float | None = None
    dose: float = 8.0
    read_noise: float = 0.0
    row_offset: float = 0.0
    jitter: float = 0.0
    drift: tuple[float, float] = (0.0, 0.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if np.isscalar(self.size):
            self.size = (int(self.size), int(self.size))
        self.size = (int(self.size[0]), int(self.size[1]))
        self.basis = tuple(tuple(float(v) for v in b) for b in self.basis)
        self.drift = (float(self.drift[0]), float(self.drift[1]))
        if self.lattice not in LATTICES:
            raise ValueError(f"lattice must be one of {LATTICES}, not {self.lattice!r}")
        if min(self.size) < 8 or max(self.size) > MAX_SIDE:
            raise ValueError(f"size must be 8 to {MAX_SIDE} px per side, got {self.size}")
        for name in ("period", "aspect", "angle", "background", "dent_depth", "dose", "read_noise", "row_offset",
                     "jitter"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not all(np.isfinite(self.drift)) or not all(np.isfinite(v) for b in self.basis for v in b):
            raise ValueError(f"drift and basis must be finite numbers, got {self.drift} and {self.basis}")
        if self.column_width is not None and not 0 < self.column_width < float("inf"):
            raise ValueError(f"column_width must be a positive number of px (or left out for the default), got "
                             f"{self.column_width}")
        if self.dent_radius is not None and not 0 < self.dent_radius < float("inf"):
            raise ValueError(f"dent_radius must be a positive number of px (or left out), got {self.dent_radius}")
        if not self.period > 1.0:
            raise ValueError(f"period must be more than 1 px, got {self.period}")
        if not self.dose > 0:
            raise ValueError(f"dose must be positive (electron counts per px), got {self.dose}")
        if not 0.0 <= self.dent_depth < 1.0:
            raise ValueError(f"dent_depth must be in [0, 1), got {self.dent_depth}")
        for name in ("read_noise", "row_offset", "jitter", "background"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.dents < 0:
            raise ValueError(f"dents must not be negative, got {self.dents}")
        if not 0.05 <= self.aspect <= 20:
            raise ValueError(f"aspect (second/first period of a rectangular lattice) must be 0.05 to 20, got {self.aspect}")
        bad = [b for b in self.basis if len(b) != 3 or b[2] < 0]  # an empty basis is a flat image
        if bad:
            raise ValueError(f"basis columns are 'u,v,Z' with an atomic number Z of 0 or more, got {bad}")

    @property
    def sigma(self) -> float:
        """Column width (Gaussian sigma, px); 0.13 periods unless set."""
        return float(self.column_width) if self.column_width else 0.13 * self.period

    @property
    def radius(self) -> float:
        """Dent radius (px); a quarter of the smaller image side unless set."""
        return float(self.dent_radius) if self.dent_radius else 0.25 * min(self.size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["basis"] = [list(b) for b in self.basis]
        d["drift"] = list(self.drift)
        return d


@dataclass
class SimResult:
    """A simulated image: noisy counts, clean expected counts, dent map, true columns."""

    noisy: np.ndarray
    clean: np.ndarray
    dent: np.ndarray
    positions: np.ndarray  # (N, 2) float, (row, col) in image pixels
    species: np.ndarray  # (N,) atomic number of each column
    params: SimParams = field(repr=False)


def lattice_vectors(p: SimParams) -> np.ndarray:
    """Rows are the two lattice vectors in (row, col) px."""
    a = p.period
    if p.lattice == "square":
        vecs = np.array([[a, 0.0], [0.0, a]])  # (x, y)
    elif p.lattice == "hexagonal":
        vecs = np.array([[a, 0.0], [a / 2, a * np.sqrt(3) / 2]])
    else:
        vecs = np.array([[a, 0.0], [0.0, a * p.aspect]])
    t = np.deg2rad(p.angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    xy = vecs @ rot.T
    return xy[:, ::-1].copy()  # to (row, col)


def _scan_coordinates(p: SimParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Specimen coordinates (row, col) that each image pixel sampled, and each row's x offset."""
    h, w = p.size
    t = np.arange(h, dtype=np.float64)[:, None] / max(h - 1, 1)
    row_shift = rng.normal(0.0, p.row_offset, size=h) if p.row_offset > 0 else np.zeros(h)
    sr = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None] + p.drift[0] * t, (h, w)).copy()
    sc = np.arange(w, dtype=np.float64)[None, :] + p.drift[1] * t + row_shift[:, None]
    if p.jitter > 0:
        sc = sc + rng.normal(0.0, p.jitter, size=(h, w))
    return sr, np.broadcast_to(sc, (h, w)).copy(), row_shift


def _dent_centres(p: SimParams, rng: np.random.Generator) -> np.ndarray:
    h, w = p.size
    return rng.uniform([0.2 * h, 0.2 * w], [0.8 * h, 0.8 * w], size=(p.dents, 2))


def _dent_map(sr: np.ndarray, sc: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Smooth flat-bottomed depressions: exp(-(r/R)^4) per dent, overlaps capped at 1."""
    dent = np.zeros(sr.shape, dtype=np.float64)
    for cy, cx in centres:
        r2 = ((sr - cy) ** 2 + (sc - cx) ** 2) / radius**2
        dent += np.exp(-(r2**2))
    return np.minimum(dent, 1.0)


def _columns(sr: np.ndarray, sc: np.ndarray, vecs: np.ndarray, origin: np.ndarray, p: SimParams) -> np.ndarray:
    """Sum of Gaussian columns sampled at specimen coordinates (sr, sc)."""
    inv = np.linalg.inv(vecs.T)  # (row, col) -> fractional (u, v)
    sigma = p.sigma
    reach = int(np.ceil(4.0 * sigma / min(np.linalg.norm(vecs, axis=1)))) + 1
    offsets = [(i, j) for i in range(-reach, reach + 1) for j in range(-reach, reach + 1)]
    out = np.zeros(sr.shape, dtype=np.float64)
    chunk = max(1, 2_000_000 // sr.shape[1])
    for r0 in range(0, sr.shape[0], chunk):
        pr = sr[r0 : r0 + chunk] - origin[0]
        pc = sc[r0 : r0 + chunk] - origin[1]
        u = inv[0, 0] * pr + inv[0, 1] * pc
        v = inv[1, 0] * pr + inv[1, 1] * pc
        acc = np.zeros(pr.shape)
        for bu, bv, z in p.basis:
            cu = np.floor(u - bu)
            cv = np.floor(v - bv)
            for i, j in offsets:
                du = u - (cu + i + bu)
                dv = v - (cv + j + bv)
                dr = du * vecs[0, 0] + dv * vecs[1, 0]
                dc = du * vecs[0, 1] + dv * vecs[1, 1]
                acc += z**1.7 * np.exp(-(dr * dr + dc * dc) / (2 * sigma * sigma))
        out[r0 : r0 + chunk] = acc
    return out


def _true_positions(p: SimParams, vecs: np.ndarray, origin: np.ndarray, row_shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel positions of every column whose centre falls inside the image."""
    h, w = p.size
    corners = np.array([[0, 0], [0, w], [h, 0], [h, w]], dtype=float) - origin
    inv = np.linalg.inv(vecs.T)
    uv = corners @ inv.T
    lo = np.floor(uv.min(axis=0)) - 2
    hi = np.ceil(uv.max(axis=0)) + 2
    iu, iv = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    pos, spec = [], []
    for bu, bv, z in p.basis:
        s = np.stack([(iu + bu).ravel(), (iv + bv).ravel()], axis=1) @ vecs + origin  # specimen (row, col)
        # invert the linear drift (rows), then the per-row offset of the row the column lies on
        t_den = max(h - 1, 1)
        r_img = s[:, 0] / (1.0 + p.drift[0] / t_den)
        rr = np.clip(np.rint(r_img).astype(int), 0, h - 1)
        c_img = s[:, 1] - p.drift[1] * r_img / t_den - row_shift[rr]
        pos.append(np.stack([r_img, c_img], axis=1))
        spec.append(np.full(len(s), z))
    if not pos:
        return np.zeros((0, 2)), np.zeros(0)
    allpos, allspec = np.concatenate(pos), np.concatenate(spec)
    inside = (allpos[:, 0] >= 0) & (allpos[:, 0] <= h - 1) & (allpos[:, 1] >= 0) & (allpos[:, 1] <= w - 1)
    order = np.lexsort((allpos[inside, 1], allpos[inside, 0]))
    return allpos[inside][order], allspec[inside][order]


def simulate(params: SimParams | None = None, **kwargs) -> SimResult:
    """Simulate one STEM ADF image; ``simulate(period=12, dose=5, seed=3)`` works too."""
    p = params if params is not None else SimParams(**kwargs)
    if params is not None and kwargs:
        p = SimParams(**{**p.to_dict(), **kwargs})
    rng = np.random.default_rng(p.seed)
    vecs = lattice_vectors(p)
    origin = rng.uniform(0, 1, size=2) @ vecs
    centres = _dent_centres(p, rng)
    sr, sc, row_shift = _scan_coordinates(p, rng)
    dent = _dent_map(sr, sc, centres, p.radius) if p.dents > 0 else np.zeros(p.size)
    thickness = 1.0 - p.dent_depth * dent
    signal = (_columns(sr, sc, vecs, origin, p) + p.background * max([b[2] for b in p.basis] or [1.0]) ** 1.7) * thickness
    mean = signal.mean()
    if mean <= 0:
        signal = np.ones(p.size)
        mean = 1.0
    clean = signal * (p.dose / mean)
    noisy = rng.poisson(clean).astype(np.float64)
    if p.read_noise > 0:
        noisy += rng.normal(0.0, p.read_noise, size=noisy.shape)
    positions, species = _true_positions(p, vecs, origin, row_shift)
    return SimResult(
        noisy=noisy.astype(np.float32),
        clean=clean.astype(np.float32),
        dent=dent.astype(np.float32),
        positions=positions,
        species=species,
        params=p,
    )


def write_set(out, n: int, params: SimParams, *, prefix: str = "sim", pixel_size: float | None = None,
              overwrite: bool = False):
    """A job (:mod:`.jobs`): write ``n`` simulated pairs to ``out``; returns the parameters file.

    ``out/noisy``, ``out/clean`` and ``out/dent`` get ``PREFIX_NNNN.tif`` (image i uses seed
    ``params.seed + i``), ``out/positions`` the true column positions (CSV: row, col, Z) and
    ``out/simulate.json`` (``out/PREFIX.json`` for another prefix) every parameter and seed.
    Nothing is written when a file would be replaced without ``overwrite``.
    """
    import json
    from dataclasses import replace
    from pathlib import Path

    from . import __version__
    from .io import write_tiff
    from .jobs import Event

    if n < 1:
        raise ValueError(f"the number of images must be at least 1, got {n}")
    if pixel_size is not None and not 0 < pixel_size < float("inf"):
        raise ValueError(f"the pixel size must be a positive number of nm (or left out), got {pixel_size}")
    if not prefix or Path(prefix).name != prefix or prefix in (".", "..") or prefix != prefix.strip():
        raise ValueError(f"the prefix must be a plain file name (no folders), got {prefix!r}")
    out = Path(out)
    names = [f"{prefix}_{i:04d}" for i in range(n)]
    meta_path = out / ("simulate.json" if prefix == "sim" else f"{prefix}.json")
    existing = [t for t in [out / sub / f"{m}.tif" for m in names for sub in ("noisy", "clean", "dent")] + [meta_path]
                if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist already (e.g. '{existing[0]}'); "
                              "replace them (--overwrite) or choose another folder")
    if overwrite:  # a set replaced by a smaller one must not keep the old set's extra images, nor half-written files
        keep = set(names)
        for sub, suffix in (("noisy", ".tif"), ("clean", ".tif"), ("dent", ".tif"), ("positions", ".csv")):
            for old in (out / sub).glob(f"{prefix}_*{suffix}") if (out / sub).is_dir() else []:
                if old.stem not in keep:
                    old.unlink()
            for part in (out / sub).glob(".*.part") if (out / sub).is_dir() else []:
                part.unlink()
    records = []
    for i, name in enumerate(names):
        sim = simulate(replace(params, seed=params.seed + i))
        for sub, arr in (("noisy", sim.noisy), ("clean", sim.clean), ("dent", sim.dent)):
            write_tiff(out / sub / f"{name}.tif", arr, pixel_size=pixel_size, overwrite=True)
        pos_path = out / "positions" / f"{name}.csv"
        pos_path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(pos_path, np.column_stack([sim.positions, sim.species]), delimiter=",", fmt="%.4f",
                   header="row,col,Z", comments="")
        records.append({"name": name, "seed": params.seed + i, "n_columns": int(len(sim.positions))})
        yield Event(i + 1, n, "simulate", name)
    meta = {
        "generator": f"napari-emdenoise {__version__} simulate",
        "params": {k: v for k, v in params.to_dict().items() if k != "seed"},
        "pixel_size_nm": pixel_size,
        "images": records,
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta_path
