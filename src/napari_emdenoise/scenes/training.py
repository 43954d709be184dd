"""Training sets drawn from the scene simulator (``emdenoise scenes``), kept apart from the benchmark's seeds."""

from __future__ import annotations

import numpy as np

from ._types import Scene, SceneParams
from .render import make_scene

# --------------------------------------------------------------------------- training sets
BENCHMARK_SEEDS = range(9000, 10000)  # the fidelity benchmark's scenes; a training set refuses them
# share of each kind in a training set: rare single-atom content (dopants, vacancies, light columns) gets more than its
# share. These are the shares the bundled model was trained on; perfect lattices ("lattice") can be added with kinds=
TRAINING_KINDS = {"vacancies": 0.2, "dopants": 0.22, "columns": 0.16, "amorphous": 0.12, "particle": 0.12, "interface": 0.1,
                  "scan": 0.08}


def check_kinds(kinds: dict[str, float] | None) -> dict[str, float]:
    """Shares of scene kinds (normalised to sum 1), or a ValueError naming what is wrong; None: TRAINING_KINDS."""
    from ._types import KINDS

    if kinds is None:
        kinds = TRAINING_KINDS
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown scene kind {bad[0]!r}; the kinds are {', '.join(KINDS)}")
    if any(not np.isfinite(v) or v < 0 for v in kinds.values()) or sum(kinds.values()) <= 0:
        raise ValueError("scene kind shares must be non-negative numbers, at least one of them above 0")
    total = float(sum(kinds.values()))
    return {k: float(v) / total for k, v in kinds.items() if v > 0}


MAX_TRAINING_DOSE = 60.0  # counts/px: above it the brightest columns saturate uint16 at the highest drawn gains


def training_params(seed: int, size: int = 384, periods: tuple[float, float] = (6.0, 24.0),
                    doses: tuple[float, float] = (0.8, 40.0), kinds: dict[str, float] | None = None) -> SceneParams:
    """One randomly drawn scene of a training set: kind, scale, dose, optics, scan and detector all varied.

    Periods and doses are drawn log-uniformly from their ranges; seeds of the fidelity benchmark are refused.
    """
    if seed in BENCHMARK_SEEDS:
        raise ValueError(f"seed {seed} belongs to the fidelity benchmark ({BENCHMARK_SEEDS.start}-{BENCHMARK_SEEDS.stop - 1}); "
                         "use other seeds for training data")
    if not 2 <= periods[0] <= periods[1] <= 96:
        raise ValueError(f"the period range must lie within 2-96 px, low to high; got {periods[0]:g} {periods[1]:g}")
    if not 0 < doses[0] <= doses[1] <= MAX_TRAINING_DOSE:
        raise ValueError(f"the dose range must be LOW HIGH with 0 < LOW <= HIGH <= {MAX_TRAINING_DOSE:g} counts/px; got "
                         f"{doses[0]:g} {doses[1]:g} (a dose of 0 has no counts; higher doses than {MAX_TRAINING_DOSE:g} "
                         "saturate the 16-bit detector values at the drawn gains)")
    if not 32 <= size <= 4096:
        raise ValueError(f"the scene size must be 32-4096 px, not {size}")
    rng = np.random.default_rng([seed, 7_000_001])
    shares = check_kinds(kinds)
    names = list(shares)
    kind = names[int(rng.choice(len(names), p=np.array(list(shares.values()))))]
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
    from ..io import write_tiff

    out, name, params = args
    scene = make_scene(params)
    write_tiff(out / "noisy" / f"{name}.tif", scene.noisy, dtype="uint16", overwrite=True)
    write_tiff(out / "clean" / f"{name}.tif", target(scene), overwrite=True)
    return {"name": name, **params.to_dict()}


def write_training_set(out, n: int, seed: int, *, size: int = 384, periods: tuple[float, float] = (6.0, 24.0),
                       doses: tuple[float, float] = (0.8, 40.0), jobs: int = 1, prefix: str = "scene", overwrite: bool = False,
                       kinds: dict[str, float] | None = None):
    """Write ``n`` drawn scenes as OUT/noisy/NAME.tif (uint16) and OUT/clean/NAME.tif (float32 :func:`target`), with
    OUT/scenes.json listing every scene's parameters, written last (a folder without it holds a partial set). A job
    (:mod:`.jobs`): an :class:`Event` per scene written; returns the JSON's path.

    An existing set (or any TIFF in OUT/noisy or OUT/clean) is refused unless ``overwrite``; then the old set's files
    are removed first, so no stale pair stays behind. TIFFs of other names are never removed: such a folder is refused.
    """
    import json
    from pathlib import Path

    from ..jobs import Event

    out = Path(out)
    if n < 1:
        raise ValueError("a training set needs at least one scene")
    shares = check_kinds(kinds)
    todo = [(out, f"{prefix}_{i:05d}", training_params(seed + i, size, periods, doses, shares)) for i in range(n)]
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
    meta.write_text(json.dumps({"seed": seed, "size": size, "periods": list(periods), "doses": list(doses), "kinds": shares,
                                "scenes": records},
                               indent=1) + "\n")
    return meta
