"""The fidelity report at the end of a training run: is the new model as faithful as the bundled one?

Before a microscopist publishes results from a model they trained, they must be able to see
whether it invents or erases content. :func:`iter_report` (a job, :mod:`.jobs`) measures the
trained model beside the bundled one:

* on the user's own noisy frames: the share of pixels the consistency map flags
  (:func:`napari_emdenoise.check`), with no ground truth needed;
* on the fidelity benchmark's quick scenes (``emdenoise bench --fidelity --quick``): vacancies
  filled, dopants found, false atoms in vacuum, dent error, light-column contrast, PSNR.

It warns, in plain words, wherever the trained model is worse than the bundled one beyond the
run-to-run noise of the measure (the tolerances in ``WORSE``), and writes
``fidelity_report.json`` and ``fidelity_report.md`` to the run folder. ``emdenoise train`` prints
it and the Train widget shows it when a run ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .jobs import Event, Job

MAX_FRAMES = 8
FRAME_SIDE = 512  # px: a central crop of each frame is checked (the check is local, so a crop says what the frame says)

# row: (label, higher is better, tolerance before it counts as worse)
WORSE = {
    "own_flagged_share": ("pixels flagged on your frames", False, 0.001),
    "vacancy_fill_heavy": ("heavy-site vacancies filled", False, 0.02),
    "vacancy_fill_light": ("light-site vacancies filled", False, 0.10),
    "dopants_found": ("dopants found", True, 0),
    "false_atoms_vacuum": ("false atoms in vacuum", False, 0),
    "dent_error": ("dent error", False, 0.02),
    "light_error_5-15%": ("light-column contrast error (5-15 %)", False, 0.05),
    "psnr": ("PSNR on the scenes (dB)", True, 0.5),
}


@dataclass
class TrainingReport:
    rows: dict[str, dict]  # "bundled" and "trained": each WORSE key's value
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = ["| measure | bundled | trained |", "|---|---|---|"]
        for key, (label, _, _) in WORSE.items():
            b, t = self.rows["bundled"].get(key), self.rows["trained"].get(key)
            lines.append(f"| {label} | {_fmt(key, b)} | {_fmt(key, t)} |")
        if self.warnings:
            lines += ["", "WARNING: the trained model is less faithful than the bundled one:"]
            lines += [f"- {w}" for w in self.warnings]
        else:
            lines += ["", "The trained model is at least as faithful as the bundled one on every row."]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "warnings": self.warnings}


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if key in ("own_flagged_share", "vacancy_fill_heavy", "vacancy_fill_light"):
        return f"{100 * v:.2f} %"
    return f"{v:.0f}" if key in ("dopants_found", "false_atoms_vacuum") else f"{v:.3f}"


def _crop(frame: np.ndarray) -> np.ndarray:
    from .tiling import central_crop

    return np.asarray(central_crop(frame, FRAME_SIDE))


def iter_report(model, noisy_frames, run_dir=None, device: str = "auto") -> Job[TrainingReport]:
    """A job: the trained ``model`` (a path or a Denoiser) beside the bundled model; writes the report to ``run_dir``."""
    from . import fidelity
    from .consistency import ConsistencyError, check
    from .inference import denoise, resolve_model
    from .jobs import thread_warnings

    models = {"bundled": resolve_model(None), "trained": resolve_model(model)}
    frames = [_crop(f) for f in list(noisy_frames)[:MAX_FRAMES] if np.ndim(f) == 2]
    n_scenes = len(fidelity.QUICK)
    total, done = 2 * len(frames) + 2 * n_scenes, 0
    rows: dict[str, dict] = {}
    for name, net in models.items():
        shares = []
        for frame in frames:
            with thread_warnings(None):
                out = denoise(frame, net, device=device)
            try:
                shares.append(check(frame, out).share)
            except ConsistencyError:
                pass
            done += 1
            yield Event(done, total, "report", f"checking the {name} model on your frame {len(shares)}")
        rows[name] = {"own_flagged_share": float(np.mean(shares)) if shares else float("nan")}
    methods = {name: fidelity.model_method(net) for name, net in models.items()}
    gen = fidelity.iter_fidelity(methods, quick=True)
    try:
        while True:
            e = next(gen)
            yield Event(done + e.done, total, "report", f"fidelity scenes: {e.message}")
    except StopIteration as stop:
        run = stop.value
    for row in fidelity.summary(run.rows):
        rows[row["method"]].update({k: row[k] for k in WORSE if k in row})
    report = TrainingReport(rows, _warnings(rows["bundled"], rows["trained"]))
    if run_dir is not None:
        run_dir = Path(run_dir)
        (run_dir / "fidelity_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (run_dir / "fidelity_report.md").write_text("# Fidelity report\n\n" + report.text() + "\n")
    return report


def _warnings(bundled: dict, trained: dict) -> list[str]:
    out = []
    for key, (label, higher, tol) in WORSE.items():
        b, t = bundled.get(key), trained.get(key)
        if b is None or t is None or not (np.isfinite(b) and np.isfinite(t)):
            continue
        worse = t < b - tol if higher else t > b + tol
        if worse:
            out.append(f"{label}: {_fmt(key, t)} against {_fmt(key, b)} for the bundled model")
    return out


def train_with_report(noisy, clean, run_dir, cfg=None, *, report: bool = True, **kwargs):
    """A job: :func:`napari_emdenoise.train.train`, then (``report``) :func:`iter_report` of its model on the same
    noisy frames; returns ``(denoiser path, TrainingReport or None)``. Stopping during training saves a checkpoint as
    ``train`` does, and no report is made."""
    from .train import train

    path = yield from train(noisy, clean, run_dir, cfg, **kwargs)
    if not report:
        return path, None
    device = (cfg.device if cfg is not None else "auto")
    result = yield from iter_report(path, noisy, run_dir, device=device)
    return path, result
