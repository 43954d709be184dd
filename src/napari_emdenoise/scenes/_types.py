"""Scene labels, parameters and the Scene record (see the package docstring)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# column labels
HEAVY, LIGHT, VACANCY_HEAVY, VACANCY_LIGHT, DOPANT, ADATOM, AMORPHOUS = range(1, 8)
LABEL_NAMES = {HEAVY: "heavy", LIGHT: "light", VACANCY_HEAVY: "vacancy (heavy site)", VACANCY_LIGHT: "vacancy (light site)",
               DOPANT: "dopant", ADATOM: "adatom", AMORPHOUS: "amorphous"}
# region mask values
VACUUM, CRYSTAL, AMORPHOUS_REGION = 0, 1, 2
KINDS = ("vacancies", "dopants", "columns", "amorphous", "particle", "interface", "scan", "lattice")
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
