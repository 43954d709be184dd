"""A training run's folder: the full checkpoint (atomic), reference-named networks, the denoiser, the configuration,
the loss log and its plot."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoints import ModelInfo, save_generator, save_reference
from .io import DiskFullError, atomic_write
from .train_config import TrainConfig, TrainingError
from .train_model import _Model

STATE = "checkpoint.pt"
CONFIG = "config.json"
LOG = "loss_log.csv"


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"cannot write to the output folder '{run_dir}': {exc.strerror or exc}") from None


def save_run(run_dir: Path, model: _Model, iteration: int, rng: np.random.Generator, info: ModelInfo) -> Path:
    """Full state (atomic), reference-named networks and our .safetensors denoiser; a full disk is a TrainingError
    that says so, and the previous checkpoint stays as it was."""
    try:
        state_path = atomic_write(run_dir / STATE, lambda tmp: torch.save(model.state(iteration, rng), tmp))
        for name, net in model.nets.items():
            save_reference(run_dir / f"latest_net_{name}.pth", net)
        save_generator(run_dir / "denoiser.safetensors", model.nets["G_A"],
                       replace(info, description=f"{info.description}; iteration {iteration}"))
    except DiskFullError as exc:
        raise TrainingError(f"iteration {iteration} could not be saved: {exc.strerror}; the last saved checkpoint is "
                            "kept (resume from it once there is room)") from None
    except OSError as exc:
        raise TrainingError(f"iteration {iteration} could not be saved in '{run_dir}': {exc.strerror or exc}; the last "
                            "saved checkpoint is kept") from None
    return state_path


def load_run_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise TrainingError(f"'{run_dir}' is not a training run folder (no {CONFIG}); start a new run instead")
    return TrainConfig.from_dict(json.loads(path.read_text()))


LOSS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def loss_curves(series: dict[str, Sequence[float]], width: float, height: float, pad: float) -> dict[str, tuple]:
    """Pixel coordinates (xs, ys) of each loss curve in a width x height plot: each series is
    smoothed over 1% of its length and all share one scale (their 99th percentile at the top)."""
    filled = {k: np.asarray(v, dtype=np.float64) for k, v in series.items() if len(v)}
    filled = {k: v[np.isfinite(v)] for k, v in filled.items()}  # a diverged step must not break the plot
    filled = {k: v for k, v in filled.items() if v.size}
    if not filled:
        return {}
    top = max(float(np.percentile(v, 99)) for v in filled.values()) or 1.0
    curves = {}
    for name, v in filled.items():
        win = max(1, len(v) // 100)
        v = np.convolve(v, np.ones(win) / win, mode="valid")
        if len(v) < 2:
            continue
        xs = pad + np.arange(len(v)) / (len(v) - 1) * (width - 2 * pad)
        ys = height - pad - np.clip(v / top, 0, 1) * (height - 2 * pad)
        curves[name] = (xs, ys)
    return curves


def _plot_losses(run_dir: Path) -> Path | None:
    """loss.png beside the CSV: each loss (smoothed) against the iteration, drawn without matplotlib."""
    path = run_dir / LOG
    if not path.exists():
        return None
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) < 2:
        return None
    from skimage.draw import line
    from skimage.io import imsave

    keys = [k for k in rows[0] if k not in ("iteration", "lr")]
    h, w = 300, 600
    img = np.full((h, w, 3), 255, np.uint8)
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in LOSS_COLORS]
    curves = loss_curves({k: [float(r[k]) for r in rows] for k in keys}, w, h, 20)
    for i, (xs, ys) in enumerate(curves.values()):
        for j in range(len(xs) - 1):
            rr, cc = line(int(ys[j]), int(xs[j]), int(ys[j + 1]), int(xs[j + 1]))
            img[rr, cc] = rgb[i % len(rgb)]
    out = run_dir / "loss.png"
    imsave(out, img, check_contrast=False)
    (run_dir / "loss_legend.json").write_text(json.dumps({k: rgb[i % len(rgb)] for i, k in enumerate(keys)}) + "\n")
    return out
