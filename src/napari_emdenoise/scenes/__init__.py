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

from ._types import (
                     ADATOM,
                     AMORPHOUS,
                     AMORPHOUS_REGION,
                     CRYSTAL,
                     DOPANT,
                     HEAVY,
                     KINDS,
                     LABEL_NAMES,
                     LIGHT,
                     LIGHT_BANDS,
                     VACANCY_HEAVY,
                     VACANCY_LIGHT,
                     VACUUM,
                     Scene,
                     SceneParams,
                     zweight,
)
from .render import make_scene
from .structures import Projection, structure
from .training import (
                     BENCHMARK_SEEDS,
                     MAX_TRAINING_DOSE,
                     TRAINING_KINDS,
                     target,
                     training_params,
                     write_training_set,
)

__all__ = ["ADATOM", "AMORPHOUS", "AMORPHOUS_REGION", "BENCHMARK_SEEDS", "CRYSTAL", "DOPANT", "HEAVY", "KINDS", "LABEL_NAMES",
           "LIGHT", "LIGHT_BANDS", "MAX_TRAINING_DOSE", "TRAINING_KINDS", "VACANCY_HEAVY", "VACANCY_LIGHT", "VACUUM",
           "Projection", "Scene", "SceneParams", "make_scene", "structure", "target", "training_params", "write_training_set",
           "zweight"]
