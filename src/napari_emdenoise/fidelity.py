"""The fidelity benchmark behind ``emdenoise bench --fidelity``: did a denoiser keep what is real?

Scenes come from :mod:`.scenes` (SrTiO3 with vacancies, W-doped MoS2 with Pt adatoms, light
columns at 5-35 % of the heavy ones, amorphous films over vacuum, an Au particle on a carbon
support, a grain boundary with an edge, and a harsh scan/detector chain with a dent), with
seeds from 9000 up: training sets must use other seeds. Every output is mapped onto the truth
by a least-squares affine map first (as in :mod:`.metrics`; values far above the output's bulk,
such as hot pixels the noisy input keeps, are clipped first), then measured:

* **vacancy fill rate** (heavy / light sites): the share of empty sites whose column height
  in the output is more than half-way from the true empty-site height up to the output's
  median occupied column of the same sublattice;
* **dopants** (substitutional W and Pt adatoms): contrast-ratio error (median |ratio_out /
  ratio_true - 1|, ratio = dopant height over the matrix's heavy columns), recall (height
  above the matrix at least half the true one) and false dopants (matrix columns that rise
  that far);
* **light columns** per band of true light/heavy ratio (5-15, 15-25, 25-35 %, and 10-15 % in the
  CSV files): contrast-ratio error and recall (at least half the true height);
* **amorphous and vacuum regions**: PSNR (peak: the scene's truth range) and mean SSIM
  inside each region; **false atoms in vacuum**: maxima in vacuum standing higher than half
  the scene's median true atom;
* **dent error** (as :mod:`.metrics`) and **column position RMS** (px, heavy columns);
* **consistency**: the regions and share of pixels :func:`.consistency.check` flags;
* seconds per image.

"Column height" is the value of the lightly smoothed image at the true column position
minus a local background (a minimum filter over one period, smoothed), the same measuring
stick for the truth and every output.

The reference row **ideal (known columns)** (:func:`ideal_observer`) is told everything but the
column weights and fits each weight to the noisy frame: its rates are the noise limit of a
per-column measurement. A real method beats it on a row only by pooling neighbours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.metrics import structural_similarity

from .jobs import Event, Job
from .metrics import align, dent_contrast, find_columns, match_columns
from .scenes import (ADATOM, AMORPHOUS, AMORPHOUS_REGION, BENCHMARK_SEEDS, DOPANT, HEAVY, LIGHT, LIGHT_BANDS, VACANCY_HEAVY, VACANCY_LIGHT, VACUUM,
                     Scene, make_scene)

SEED0 = BENCHMARK_SEEDS.start  # benchmark scenes use seeds from here; training sets refuse them
# kind, period px, dose counts/px
SUITE = [
    ("vacancies", 10, 3), ("vacancies", 16, 12), ("dopants", 10, 4), ("dopants", 16, 15),
    ("columns", 12, 5), ("columns", 20, 20), ("amorphous", 12, 4), ("amorphous", 20, 15),
    ("particle", 12, 6), ("interface", 12, 8), ("scan", 12, 5), ("scan", 20, 2),
]
QUICK = [SUITE[0], SUITE[2], SUITE[4], SUITE[6], SUITE[8], SUITE[9], SUITE[10]]

Method = Callable[[Scene], np.ndarray]


def suite(quick: bool = False) -> Iterator[tuple[str, Scene]]:
    size = 256 if quick else 384
    for kind, period, dose in QUICK if quick else SUITE:
        i = SUITE.index((kind, period, dose))
        scene = make_scene(kind=kind, size=size, period=period, dose=dose, angle=7.0 * i, width=0.09 + 0.01 * (i % 4),
                           seed=SEED0 + i)
        yield f"{kind} {period} px, dose {dose}", scene


# --------------------------------------------------------------------------- measuring stick
BAND_KEYS = [f"{int(lo * 100)}-{int(hi * 100)}%" for lo, hi in LIGHT_BANDS]
# measured too, outside the tables: the part of the first band that the default model's acceptance counts ("from 10 %")
MEASURED_BANDS = dict(zip(BAND_KEYS, LIGHT_BANDS), **{"10-15%": (0.10, 0.15)})


def above_background(image: np.ndarray, scene: Scene, sigma: float) -> np.ndarray:
    """The image smoothed at ``sigma`` px minus its local background (a minimum filter over one period, smoothed)."""
    smooth = ndimage.gaussian_filter(image.astype(np.float64), max(0.5, sigma))
    bg = ndimage.gaussian_filter(ndimage.minimum_filter(smooth, size=max(3, int(round(scene.period)))), scene.period / 2)
    return smooth - bg


def heights(image: np.ndarray, scene: Scene) -> np.ndarray:
    """Column height at every true position: smoothed value minus the local background."""
    return ndimage.map_coordinates(above_background(image, scene, 0.6 * scene.sigma), scene.positions.T, order=1,
                                   mode="nearest")


def _inner(scene: Scene, margin: float) -> np.ndarray:
    h, w = scene.clean.shape
    p = scene.positions
    return (p[:, 0] >= margin) & (p[:, 0] <= h - 1 - margin) & (p[:, 1] >= margin) & (p[:, 1] <= w - 1 - margin)


def _nan_median(a) -> float:
    a = np.asarray(a, float)
    return float(np.median(a)) if a.size else float("nan")


def _region_scores(out: np.ndarray, truth: np.ndarray, mask: np.ndarray, ssim_map: np.ndarray, span: float):
    if mask.sum() < 64:
        return float("nan"), float("nan")
    mse = float(np.mean((out[mask] - truth[mask]) ** 2))
    return (float("inf") if mse == 0 else 10 * np.log10(span**2 / mse)), float(ssim_map[mask].mean())


def measure(scene: Scene, output: np.ndarray) -> dict:
    """All fidelity measures of one output of one scene (NaN where the scene has no such content)."""
    from .consistency import hot_bound

    truth = scene.clean.astype(np.float64)
    raw = np.asarray(output, dtype=np.float64)
    out = align(np.minimum(raw, hot_bound(raw)), truth)  # hot pixels an output kept must not steer the alignment
    ok = _inner(scene, 0.6 * scene.period)
    h_true, h_out = heights(truth, scene), heights(out, scene)
    lab, sub = scene.labels, scene.sublattice
    r: dict = {}

    # vacancies: per sublattice, the output's occupied level of that sublattice is the top
    for name, vac_label, occ_label in (("heavy", VACANCY_HEAVY, HEAVY), ("light", VACANCY_LIGHT, LIGHT)):
        filled = []
        for s in np.unique(sub[ok & (lab == vac_label)]):
            vac = ok & (lab == vac_label) & (sub == s)
            occ = ok & (lab == occ_label) & (sub == s) & (scene.weights >= 0.9 * scene.site_weights)
            if not occ.any():
                continue
            top = np.median(h_out[occ])
            frac = (h_out[vac] - h_true[vac]) / max(top - np.median(h_true[vac]), 1e-12)
            filled.extend(frac > 0.5)
        r[f"vacancy_fill_{name}"] = float(np.mean(filled)) if filled else float("nan")

    # dopants against the matrix's heavy columns
    dop = ok & np.isin(lab, [DOPANT, ADATOM])
    matrix = ok & (lab == HEAVY)
    if dop.any() and matrix.any():
        ref_t, ref_o = np.median(h_true[matrix]), np.median(h_out[matrix])
        ratio_t, ratio_o = h_true[dop] / ref_t, h_out[dop] / max(ref_o, 1e-12)
        r["dopant_contrast_error"] = float(np.median(np.abs(ratio_o / ratio_t - 1)))
        r["dopant_contrast_change"] = float(np.median(ratio_o / ratio_t - 1))
        base_t = np.where(lab[dop] == DOPANT, ref_t, 0.0)
        base_o = np.where(lab[dop] == DOPANT, ref_o, 0.0)
        excess_t = h_true[dop] - base_t
        r["dopants_found"] = int(np.sum(h_out[dop] - base_o > 0.5 * excess_t))
        r["dopants"] = int(dop.sum())
        sub_excess = excess_t[lab[dop] == DOPANT]
        bar = 0.5 * (np.median(sub_excess) if sub_excess.size else np.median(excess_t))
        r["false_dopants"] = int(np.sum(h_out[matrix] - ref_o > bar))
    else:
        r.update(dopant_contrast_error=float("nan"), dopant_contrast_change=float("nan"), dopants_found=0, dopants=0,
                 false_dopants=0)

    # light columns by band of their true ratio to the heavy columns
    light = ok & (lab == LIGHT)
    heavy = ok & (lab == HEAVY)
    for key, (lo, hi) in MEASURED_BANDS.items():
        if light.any() and heavy.any():
            ratio_w = scene.weights[light] / np.median(scene.weights[heavy])
            sel = (ratio_w >= lo) & (ratio_w < hi)
        else:
            sel = np.zeros(0, bool)
        if sel.sum() >= 3:
            ht, ho = h_true[light][sel], h_out[light][sel]
            rt, ro = ht / np.median(h_true[heavy]), ho / max(np.median(h_out[heavy]), 1e-12)
            r[f"light_error_{key}"] = float(np.median(np.abs(ro / rt - 1)))
            r[f"light_recall_{key}"] = float(np.mean(ho > 0.5 * ht))
        else:
            r[f"light_error_{key}"] = r[f"light_recall_{key}"] = float("nan")

    # regions
    span = float(truth.max() - truth.min())
    _, ssim_map = structural_similarity(out, truth, data_range=span, full=True)
    grow = max(1, int(round(0.5 * scene.period)))
    am = ndimage.binary_erosion(scene.region == AMORPHOUS_REGION, iterations=grow)
    vac_region = ndimage.binary_erosion(scene.region == VACUUM, iterations=grow)
    r["amorphous_psnr"], r["amorphous_ssim"] = _region_scores(out, truth, am, ssim_map, span)
    r["vacuum_psnr"], r["vacuum_ssim"] = _region_scores(out, truth, vac_region, ssim_map, span)
    if vac_region.sum() >= 64:
        real = np.isin(lab, [HEAVY, LIGHT, DOPANT, ADATOM, AMORPHOUS])
        weak = np.median(h_true[real & ok]) if (real & ok).any() else np.inf
        peaks = peak_local_max(above_background(out, scene, scene.sigma), min_distance=max(1, int(scene.period / 3)), threshold_abs=0.5 * weak,
                               exclude_border=False)
        r["false_atoms_vacuum"] = int(vac_region[peaks[:, 0], peaks[:, 1]].sum()) if len(peaks) else 0
    else:
        r["false_atoms_vacuum"] = float("nan")

    # dent and positions
    if scene.params.dents and (scene.dent > 0.9).any():
        c_true = dent_contrast(truth, scene.dent, scene.period)
        r["dent_error"] = abs(dent_contrast(out, scene.dent, scene.period) - c_true) / abs(c_true)
    else:
        r["dent_error"] = float("nan")
    cols = ok & (lab == HEAVY)
    if cols.sum() >= 5:
        true_pos = scene.positions[cols]
        _, rms = match_columns(find_columns(out, scene.period), true_pos, 0.3 * scene.period)
        r["position_rms_px"] = rms
    else:
        r["position_rms_px"] = float("nan")
    mse = float(np.mean((out - truth) ** 2))
    r["psnr"] = 10 * np.log10(span**2 / mse) if mse > 0 else float("inf")
    return r


# --------------------------------------------------------------------------- methods
def _counts(scene: Scene) -> np.ndarray:
    """Electron counts from the detector values with the scene's true gain and offset, hot pixels clipped."""
    from .consistency import hot_bound

    return scene.counts(np.minimum(scene.noisy, hot_bound(scene.noisy)))


IDEAL = "ideal (known columns)"  # the reference row of ideal_observer


def _column_groups(positions: np.ndarray, spacing: float) -> list[np.ndarray]:
    """Columns split into groups whose members lie at least ``spacing`` px apart (greedy, in index order)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(positions)
    left, groups = np.ones(len(positions), bool), []
    while left.any():
        group, blocked = [], np.zeros(len(positions), bool)
        for i in np.flatnonzero(left):
            if not blocked[i]:
                group.append(i)
                blocked[tree.query_ball_point(positions[i], spacing)] = True
        left[group] = False
        groups.append(np.array(group))
    return groups


def ideal_observer(scene: Scene) -> np.ndarray:
    """What the data can show about each column, measured by an observer that knows everything else.

    It is told the truth except each column's weight (every position, the probe, the background, the
    gain, the scan), and estimates each weight from the noisy frame alone: the Poisson-weighted
    least-squares fit of that column's own image (its core, 3 sigma around it) to the frame's
    residual. It returns the truth with every column at its estimated weight. Its fill rates and
    contrast errors are what the noise leaves to a per-column measurement: an empty site it fills
    is one the counts themselves cannot tell from an occupied one. A method may score better only
    by borrowing from its neighbours (a prior), which is how vacancies get filled.
    """
    p = scene.params
    sigma = scene.sigma
    truth = scene.clean.astype(np.float64)
    expected = scene.counts(scene.expected)  # mean counts, the line gains included
    gain = np.where(truth > 0, expected / np.where(truth > 0, truth, 1.0), 1.0)
    resid = scene.counts(scene.noisy) - expected
    inv_var = np.where(scene.noisy >= 65535, 0.0, 1.0 / np.maximum(expected + (p.read_noise / p.gain) ** 2, 1e-6))
    out = truth.copy()
    r, (h, w) = int(np.ceil(3 * sigma + 1)), truth.shape
    # each column's image, many at a time: columns this far apart do not overlap within their cores
    for group in _column_groups(scene.positions, 2 * r + 2 * sigma):
        more = scene.weights.copy()
        more[group] += 1.0
        unit = scene.render(more)[0].astype(np.float64) - truth
        for i in group:
            y, x = np.rint(scene.positions[i]).astype(int)
            core = slice(max(0, y - r), min(h, y + r + 1)), slice(max(0, x - r), min(w, x + r + 1))
            g = unit[core] * gain[core]
            den = float((g * g * inv_var[core]).sum())
            if den > 0:
                out[core] += float((g * resid[core] * inv_var[core]).sum()) / den * unit[core]
    return out.astype(np.float32)


def classical_methods() -> dict[str, Method]:
    """Noisy input, best-sigma Gaussian, (when installed) BM3D, all given the scene's true gain and offset, and the
    ideal observer (:func:`ideal_observer`), the noise limit of a per-column measurement."""
    from .bench import available_methods, bm3d_anscombe, gaussian_best

    methods: dict[str, Method] = {
        "noisy": lambda s: s.noisy.astype(np.float32),
        "gaussian": lambda s: gaussian_best(_counts(s), s.clean),
    }
    if "bm3d" in available_methods():
        methods["bm3d"] = lambda s: bm3d_anscombe(np.maximum(_counts(s), 0))
    methods[IDEAL] = ideal_observer
    return methods


def model_method(model) -> Method:
    """A generator (a path, a loaded module, or None for the bundled model) run as a user runs it: raw detector data."""
    from .inference import denoise, resolve_model
    from .jobs import thread_warnings

    net = resolve_model(model)

    def run(scene: Scene) -> np.ndarray:
        with thread_warnings(None):
            return denoise(scene.noisy, net)

    return run


REFIT = " + refit"  # suffix of the rows whose columns are refit to the data (:mod:`.refit`)


def model_methods(name: str, model) -> dict[str, Method]:
    """Two rows for a generator: ``name`` (:func:`model_method`) and ``name + REFIT``, its output with every column's
    height refit to the frame (:func:`napari_emdenoise.refit_columns`). The second reuses the first's output of the
    same scene, so its seconds are the refit's alone."""
    from .refit import refit_columns

    net, last = model_method(model), {}

    def run(scene: Scene) -> np.ndarray:
        if last.get("scene") is not scene:
            last.clear()
            last.update(scene=scene, out=net(scene))
        return last["out"]

    return {name: run, name + REFIT: lambda scene: refit_columns(scene.noisy, run(scene)).image}


@dataclass
class FidelityRun:
    rows: list[dict]  # one per (scene, method)
    figure: list[tuple[str, Scene, dict[str, np.ndarray]]]  # scenes kept for the crops figure


FIGURE_KINDS = ("vacancies", "dopants", "amorphous", "particle")


def iter_fidelity(methods: dict[str, Method], quick: bool = False) -> Job[FidelityRun]:
    """A job (:mod:`.jobs`): every method on every scene (measures, consistency and seconds), an
    :class:`Event` per (scene, method)."""
    from .consistency import ConsistencyError, check

    rows, figure, shown = [], [], set()
    total, done = len(QUICK if quick else SUITE) * len(methods), 0
    for name, scene in suite(quick):
        outputs = {}
        for method, fn in methods.items():
            t0 = time.perf_counter()
            out = np.asarray(fn(scene), dtype=np.float32)
            seconds = time.perf_counter() - t0
            row = {"scene": name, "kind": scene.params.kind, "method": method, **measure(scene, out), "seconds": seconds}
            try:
                cons = check(scene.noisy, out, scale=max(0.7, 0.15 * scene.period))
                row["flagged_regions"], row["flagged_share"] = cons.regions, cons.share
            except ConsistencyError:
                row["flagged_regions"], row["flagged_share"] = -1, float("nan")
            rows.append(row)
            outputs[method] = out
            done += 1
            yield Event(done, total, "fidelity", f"{name}: {method}")
        if scene.params.kind in FIGURE_KINDS and scene.params.kind not in shown:
            shown.add(scene.params.kind)
            figure.append((name, scene, outputs))
    return FidelityRun(rows, figure)


# --------------------------------------------------------------------------- reporting
def _mean(rows, key) -> float:
    v = [r[key] for r in rows if key in r and r[key] == r[key] and np.isfinite(r[key])]
    return float(np.mean(v)) if v else float("nan")


def summary(rows: list[dict]) -> list[dict]:
    """Per method, over the scenes that hold each content."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        found = sum(r["dopants_found"] for r in rs)
        total = sum(r["dopants"] for r in rs)
        row = {
            "method": method,
            "vacancy_fill_heavy": _mean(rs, "vacancy_fill_heavy"), "vacancy_fill_light": _mean(rs, "vacancy_fill_light"),
            "dopants_found": found, "dopants": total, "dopant_contrast_error": _mean(rs, "dopant_contrast_error"),
            "false_dopants": int(sum(r["false_dopants"] for r in rs)),
        }
        for key in MEASURED_BANDS:
            row[f"light_error_{key}"] = _mean(rs, f"light_error_{key}")
            row[f"light_recall_{key}"] = _mean(rs, f"light_recall_{key}")
        row.update(
            amorphous_psnr=_mean(rs, "amorphous_psnr"), amorphous_ssim=_mean(rs, "amorphous_ssim"),
            vacuum_psnr=_mean(rs, "vacuum_psnr"),
            false_atoms_vacuum=int(sum(r["false_atoms_vacuum"] for r in rs if r["false_atoms_vacuum"] == r["false_atoms_vacuum"])),
            dent_error=_mean(rs, "dent_error"), position_rms_px=_mean(rs, "position_rms_px"), psnr=_mean(rs, "psnr"),
            flagged_regions=_mean(rs, "flagged_regions"), flagged_share=_mean(rs, "flagged_share"),
            seconds=_mean(rs, "seconds"),
        )
        out.append(row)
    return out


def write_report(run: FidelityRun, out: Path) -> list[dict]:
    """fidelity.csv (per scene and method), fidelity_summary.csv and fidelity.png in ``out``; returns the summary."""
    from .bench import write_csv

    out.mkdir(parents=True, exist_ok=True)
    write_csv(run.rows, out / "fidelity.csv")
    summ = summary(run.rows)
    write_csv(summ, out / "fidelity_summary.csv")
    figure(run, out / "fidelity.png")
    return summ


def _f(v, fmt) -> str:
    return "-" if v != v else format(v, fmt)


def markdown_table(summ: list[dict]) -> str:
    """Two Markdown tables: what was kept, and image quality by region."""
    bands = BAND_KEYS
    a = ["| method | vacancies filled (heavy / light) | dopants found | dopant contrast error | false dopants | "
         + " | ".join(f"light {b}: error / recall" for b in bands) + " |",
         "|---|---|---|---|---|" + "---|" * len(bands)]
    for r in summ:
        light = " | ".join(f"{_f(r[f'light_error_{b}'], '.2f')} / {_f(r[f'light_recall_{b}'], '.2f')}" for b in bands)
        a.append(f"| {r['method']} | {_f(100 * r['vacancy_fill_heavy'], '.0f')} % / {_f(100 * r['vacancy_fill_light'], '.0f')} % | "
                 f"{r['dopants_found']} of {r['dopants']} | {_f(r['dopant_contrast_error'], '.2f')} | {r['false_dopants']} | {light} |")
    b = ["| method | PSNR dB (all) | amorphous PSNR / SSIM | vacuum PSNR | false atoms in vacuum | dent error | "
         "position RMS px | flagged regions / image | s per image |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in summ:
        b.append(f"| {r['method']} | {_f(r['psnr'], '.2f')} | {_f(r['amorphous_psnr'], '.2f')} / {_f(r['amorphous_ssim'], '.3f')} | "
                 f"{_f(r['vacuum_psnr'], '.2f')} | {r['false_atoms_vacuum']} | {_f(r['dent_error'], '.3f')} | "
                 f"{_f(r['position_rms_px'], '.2f')} | {_f(r['flagged_regions'], '.1f')} | {_f(r['seconds'], '.2f')} |")
    return "\n".join(a) + "\n\n" + "\n".join(b)


def figure(run: FidelityRun, path: Path, crop: int = 112) -> Path:
    """Crops of each figure scene (rows) for truth and each method (columns); vacancies marked red, dopants green."""
    from PIL import Image, ImageDraw

    rows = []
    for name, scene, outputs in run.figure:
        h, w = scene.clean.shape
        marked = np.isin(scene.labels, [VACANCY_HEAVY, VACANCY_LIGHT, DOPANT, ADATOM])
        if marked.any():  # centre the crop on the content that matters
            c = np.median(scene.positions[marked & _inner(scene, crop / 2)], axis=0) if (marked & _inner(scene, crop / 2)).any() else np.array([h / 2, w / 2])
        else:
            c = np.array([h / 2, w / 2])
        r0 = int(np.clip(c[0] - crop / 2, 0, h - crop))
        c0 = int(np.clip(c[1] - crop / 2, 0, w - crop))
        panels = [("truth", scene.clean)] + [(m, o) for m, o in outputs.items() if m != IDEAL]  # it looks like the truth
        tiles = []
        for caption, img in panels:
            part = np.asarray(img, np.float64)[r0 : r0 + crop, c0 : c0 + crop]
            lo, hi = np.percentile(part, [0.5, 99.5])
            grey = (np.clip((part - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
            tile = Image.new("RGB", (crop * 2, crop * 2 + 18), "white")
            tile.paste(Image.fromarray(grey).convert("RGB").resize((crop * 2, crop * 2), Image.NEAREST), (0, 18))
            draw = ImageDraw.Draw(tile)
            draw.text((3, 3), f"{caption}", fill="black")
            for (pr, pc), lab in zip(scene.positions, scene.labels):
                if lab in (VACANCY_HEAVY, VACANCY_LIGHT, DOPANT, ADATOM) and r0 <= pr < r0 + crop and c0 <= pc < c0 + crop:
                    y, x, rad = 2 * (pr - r0) + 18, 2 * (pc - c0), max(4, scene.period * 0.6)
                    colour = (230, 40, 40) if lab in (VACANCY_HEAVY, VACANCY_LIGHT) else (40, 200, 60)
                    draw.ellipse([x - rad, y - rad, x + rad, y + rad], outline=colour, width=2)
            tiles.append(tile)
        row = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), tiles[0].height + 16), "white")
        ImageDraw.Draw(row).text((3, 2), name, fill="black")
        x = 0
        for t in tiles:
            row.paste(t, (x, 16))
            x += t.width + 4
        rows.append(row)
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 6 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + 6
    out.quantize(colors=96).save(path)  # greys and two ring colours: a palette keeps the file small
    return path
