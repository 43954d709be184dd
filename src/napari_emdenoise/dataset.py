"""Target sets for training: clean lattice crops with the atom count of each magnification, dented by masks.

From a clean synthetic lattice (a physicist's image, or the simulator):

1. rotate by a multiple of 90 degrees clockwise (the project's origin needed 270);
2. trim it to a whole number of lattice periods and tile it into a large lattice;
3. for each magnification, crop a region holding as many periods as an experimental
   image at that magnification (given as atoms across x down, e.g. ``20MX=36x38``, or
   as the period measured on an example image), and resample it to the mask's size;
4. for each mask, ``per_mask`` crops at random positions, each thinned by the mask
   (:func:`napari_emdenoise.masks.apply_mask`).

Written as ``OUT/trainB/<zoom>_<mask>_<NNN>.tif`` (targets), ``OUT/trainA/`` (the user's
noisy images, if given, as float32) and ``OUT/manifest.csv`` + ``manifest.json`` saying
what made each file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .jobs import Event, Job, drive
from .io import is_tiff_path, read_tiff, safe_stem, write_tiff
from .lattice import estimate_period, resample
from .masks import apply_mask


class DatasetError(ValueError):
    """Something about the inputs of the target-set builder, said plainly."""


@dataclass(frozen=True)
class Zoom:
    """One magnification: ``atoms`` = (across x, down y) periods per image, or a measured period."""

    label: str
    atoms: tuple[float, float] | None = None
    period: float | None = None  # px per period in the experimental image

    def atoms_for(self, shape: tuple[int, int]) -> tuple[float, float]:
        if self.atoms is not None:
            return self.atoms
        return shape[1] / self.period, shape[0] / self.period


MAX_ATOMS = 1000  # per side of a target: 1000 columns at a 16 px period tile a 16000^2 px lattice (1 GiB)


def parse_zoom(text: str) -> Zoom:
    """'20MX=36x38' (atoms across x down) or '20MX=12.5px' (period in px) or '20MX=example.tif'."""
    if "=" not in text:
        raise DatasetError(f"zoom must look like 20MX=36x38, 20MX=12.5px or 20MX=example.tif; got {text!r}")
    label, value = (s.strip() for s in text.split("=", 1))
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*[xX]\s*(\d+(?:\.\d+)?)", value):
        atoms = (float(m.group(1)), float(m.group(2)))
        if not all(1 <= a <= MAX_ATOMS for a in atoms):
            raise DatasetError(f"zoom {label}: the atoms across and down must each be 1 to {MAX_ATOMS}, got {value!r}")
        return Zoom(label, atoms=atoms)
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*px", value):
        if not 2 <= float(m.group(1)) <= 1000:
            raise DatasetError(f"zoom {label}: the period must be 2 to 1000 px, got {value!r}")
        return Zoom(label, period=float(m.group(1)))
    path = Path(value)
    if is_tiff_path(path):
        img = read_tiff(path).data
        est = estimate_period(img if img.ndim == 2 else img.reshape(-1, *img.shape[-2:])[0])
        if not est.found:
            raise DatasetError(f"no clear lattice in '{path.name}' to measure the period of zoom {label}; give atoms instead")
        return Zoom(label, period=est.period)
    raise DatasetError(f"cannot read zoom {text!r}: expected 36x38, 12.5px or a .tif file")


@dataclass
class TargetSpec:
    """What the builder makes; every field is recorded in the manifest."""

    zooms: list[Zoom]
    per_mask: int = 20
    rotate: int = 0  # degrees clockwise, a multiple of 90
    dent_depth: float = 0.4
    seed: int = 0
    lattice_period: float | None = None  # px; None: estimated

    def __post_init__(self):
        _distinct("zoom label", [z.label for z in self.zooms])


def _distinct(what: str, names) -> None:
    """Names that become one file name (``safe_stem``) would overwrite each other's files: refused, naming them."""
    seen: dict[str, str] = {}
    for name in names:
        key = safe_stem(name)
        if key in seen:
            which = (f"the {what} '{name}' is given twice" if seen[key] == name else
                     f"the {what}s '{seen[key]}' and '{name}' make the same file names")
            raise DatasetError(f"{which}: the targets of one would overwrite the other's; give each {what} its own name")
        seen[key] = name


@dataclass
class Target:
    image: np.ndarray
    clean: np.ndarray  # the same crop without the dent
    mask_name: str
    zoom: str
    atoms: tuple[float, float]
    origin: tuple[float, float]  # crop origin in the tiled lattice (px)
    index: int
    info: dict = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{safe_stem(self.zoom)}_{safe_stem(self.mask_name)}_{self.index:03d}.tif"


def rotate_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    if degrees % 90:
        raise DatasetError(f"rotation must be a multiple of 90 degrees, got {degrees}")
    return np.rot90(image, k=-(degrees // 90) % 4).copy()


def _axis_period(image: np.ndarray, axis: int, guess: float) -> float:
    """Period along one axis from the mean profile's spectrum, near the 2D estimate."""
    prof = image.mean(axis=1 - axis)
    prof = prof - prof.mean()
    n = len(prof)
    spec = np.abs(np.fft.rfft(prof * np.hanning(n))) ** 2
    k0 = n / guess
    ks = np.arange(len(spec))
    band = (ks > 0.5 * k0) & (ks < 2.2 * k0)
    if not band.any():
        return guess
    k = ks[band][np.argmax(spec[band])]
    lo, hi = max(k - 1, 1), min(k + 2, len(spec))
    kk = (spec[lo:hi] * ks[lo:hi]).sum() / spec[lo:hi].sum()
    return n / kk


def lattice_cell(lattice: np.ndarray, period: float | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """``lattice`` trimmed to a whole number of periods along each axis, so that it tiles seamlessly.

    Returns the trimmed image and its period along (y, x) in px.
    """
    if period is None:
        est = estimate_period(lattice)
        if not est.found:
            raise DatasetError("no clear lattice found in the synthetic image: give its period (lattice_period)")
        period = est.period
    py, px = _axis_period(lattice, 0, period), _axis_period(lattice, 1, period)
    ny, nx = max(1, int(lattice.shape[0] // py)), max(1, int(lattice.shape[1] // px))
    cell = lattice[: int(round(ny * py)), : int(round(nx * px))]
    return cell, (cell.shape[0] / ny, cell.shape[1] / nx)


def iter_targets(lattice: np.ndarray, masks: dict[str, np.ndarray], spec: TargetSpec) -> Iterator[Target]:
    """Yield every target (with its undented crop), in a fixed order, deterministic from ``spec.seed``."""
    if not masks:
        raise DatasetError("no masks given: make some with 'emdenoise mask' or the Dent mask widget")
    if not spec.zooms:
        raise DatasetError("no zoom levels given, e.g. 20MX=36x38")
    if spec.per_mask < 1:
        raise DatasetError(f"per_mask must be at least 1, got {spec.per_mask}")
    for name, mask in masks.items():
        if mask.ndim != 2:
            raise DatasetError(f"mask '{name}' must be 2D, got shape {mask.shape}")
        bad = int(np.size(mask) - np.isfinite(mask).sum())
        if bad:  # a NaN mask would make NaN targets, and training on them NaN losses
            raise DatasetError(f"mask '{name}' has {bad} NaN or infinite pixel(s) of {np.size(mask)}: masks hold 0 (dent) "
                               "to 1 (full thickness); make it again with 'emdenoise mask' or the Dent mask widget")
    cell, (py, px) = lattice_cell(rotate_clockwise(np.asarray(lattice, dtype=np.float32), spec.rotate), spec.lattice_period)
    rng = np.random.default_rng(spec.seed)
    for zoom in spec.zooms:
        for mask_name, mask in masks.items():
            atoms = zoom.atoms_for(mask.shape)
            crop = (int(round(atoms[1] * py)), int(round(atoms[0] * px)))  # lattice px holding the atoms
            # a large lattice: the crop plus one cell of room for random positions
            reps = (-(-(crop[0] + cell.shape[0]) // cell.shape[0]), -(-(crop[1] + cell.shape[1]) // cell.shape[1]))
            tiled = np.tile(cell, reps)
            for i in range(spec.per_mask):
                r0 = int(rng.integers(0, tiled.shape[0] - crop[0] + 1))
                c0 = int(rng.integers(0, tiled.shape[1] - crop[1] + 1))
                clean = resample(tiled[r0 : r0 + crop[0], c0 : c0 + crop[1]], mask.shape)
                yield Target(
                    image=apply_mask(clean, mask, spec.dent_depth), clean=clean, mask_name=mask_name, zoom=zoom.label,
                    atoms=atoms, origin=(r0, c0), index=i,
                    info={"period_px": (mask.shape[0] / atoms[1] + mask.shape[1] / atoms[0]) / 2},
                )


def iter_build_targets(
    lattice: np.ndarray, masks: dict[str, np.ndarray], spec: TargetSpec, out: str | Path,
    noisy: dict[str, np.ndarray] | None = None, overwrite: bool = False,
) -> Job[list[Path]]:
    """A job (:mod:`.jobs`): write the target set to ``out``, an :class:`Event` after each target; returns the files.

    Closing the generator (Cancel) stops after the current file; the manifest is written in
    every case and lists exactly the files that exist (``complete`` says whether all do).
    """
    out = Path(out)
    manifest_csv, manifest_json = out / "manifest.csv", out / "manifest.json"
    if (manifest_csv.exists() or (out / "trainB").exists()) and not overwrite:
        raise FileExistsError(f"'{out}' already holds a target set; use overwrite (CLI: --overwrite) or another folder")
    _distinct("mask name", masks)
    total = len(spec.zooms) * len(masks) * spec.per_mask
    written: list[Path] = []
    rows: list[dict] = []
    targets = iter_targets(lattice, masks, spec)  # validates the inputs before anything is written
    first = next(targets, None)
    try:
        for name, img in (noisy or {}).items():
            path = write_tiff(out / "trainA" / f"{safe_stem(name)}.tif", img, overwrite=True)
            written.append(path)
            rows.append({"file": f"trainA/{path.name}", **dict.fromkeys(_TARGET_FIELDS, "")})
        for n, t in enumerate(_chain(first, targets), start=1):
            path = write_tiff(out / "trainB" / t.filename, t.image, overwrite=True)
            written.append(path)
            rows.append({
                "file": f"trainB/{t.filename}", "zoom": t.zoom, "mask": t.mask_name, "index": t.index,
                "atoms_x": t.atoms[0], "atoms_y": t.atoms[1], "period_px": round(t.info["period_px"], 4),
                "crop_row": t.origin[0], "crop_col": t.origin[1], "rotate_cw": spec.rotate,
                "dent_depth": spec.dent_depth, "seed": spec.seed,
            })
            yield Event(n, total, "targets")
    finally:
        out.mkdir(parents=True, exist_ok=True)
        with open(manifest_csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["file", *_TARGET_FIELDS])
            w.writeheader()
            w.writerows(rows)
        n_targets = sum(1 for r in rows if r["file"].startswith("trainB/"))
        manifest_json.write_text(json.dumps({
            "spec": {**asdict(spec), "zooms": [asdict(z) for z in spec.zooms]},
            "masks": sorted(masks), "complete": n_targets == total, "files": rows,
        }, indent=2) + "\n")
    return written


_TARGET_FIELDS = ["zoom", "mask", "index", "atoms_x", "atoms_y", "period_px", "crop_row", "crop_col", "rotate_cw",
                  "dent_depth", "seed"]


def _chain(first, rest):
    if first is not None:
        yield first
        yield from rest


def build_targets(
    lattice: np.ndarray, masks: dict[str, np.ndarray], spec: TargetSpec, out: str | Path,
    noisy: dict[str, np.ndarray] | None = None, overwrite: bool = False, progress=None,
) -> list[Path]:
    """Write the target set (see :func:`iter_build_targets`); ``progress(event)`` per target."""
    return drive(iter_build_targets(lattice, masks, spec, out, noisy=noisy, overwrite=overwrite), progress)
