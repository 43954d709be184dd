"""Training data: each image normalised (its own robust percentiles) and, unless the model trains at every scale,
resampled to the model's period; random crops with flips and 90-degree rotations, paired crops cut alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .inference import normalize
from .lattice import estimate_period, resample
from .train_config import TrainConfig, TrainingError

@dataclass
class _Domain:
    images: list[np.ndarray]  # normalised to [-1, 1] and resampled to the model's period
    names: list[str]


def _prepare(images: Sequence[np.ndarray], names: Sequence[str], period: float | None, cfg: TrainConfig,
             partners: Sequence[np.ndarray] | None = None,
             periods: Sequence[float | None] | None = None) -> tuple[_Domain, _Domain | None]:
    """Normalise, resample to ``period``; paired partners get the noisy image's mapping and factor.

    ``periods``: each image's own period when already estimated (None: none found)."""
    out, out_p = [], []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 2:
            raise TrainingError(f"'{names[i]}' has shape {img.shape}: training needs single-channel 2D images")
        if not np.isfinite(img).all():
            raise TrainingError(f"'{names[i]}' has NaN or Inf pixels; fix or drop it")
        x, lo, hi = normalize(img, cfg.norm_low, cfg.norm_high, cfg.clip)
        factor = 1.0
        if period is not None and cfg.rescale:
            own = periods[i] if periods is not None else estimate_period(img).period
            factor = period / own if own else 1.0
        shape = (round(img.shape[0] * factor), round(img.shape[1] * factor))
        if min(shape) < cfg.crop:
            raise TrainingError(
                f"'{names[i]}' is {img.shape[0]}x{img.shape[1]} px ({shape[0]}x{shape[1]} at the model's scale), "
                f"smaller than the crop of {cfg.crop} px; lower the crop size or leave the image out"
            )
        out.append(resample(x, shape) if factor != 1.0 else x)
        if partners is not None:
            c = np.asarray(partners[i], dtype=np.float32)
            if c.shape != img.shape:
                raise TrainingError(f"pair {names[i]}: noisy {img.shape} and clean {c.shape} differ in shape")
            y = (c - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
            out_p.append(resample(y, shape) if factor != 1.0 else y)
    return _Domain(out, list(names)), (_Domain(out_p, list(names)) if partners is not None else None)


def _crops(rng: np.random.Generator, domain: _Domain, n: int, size: int, partner: _Domain | None = None,
           sources: list[int] | None = None):
    """``n`` random crops (and the partner's crops cut alike); ``sources``, when given, receives each crop's image index."""
    xs, ys = [], []
    for _ in range(n):
        k = int(rng.integers(len(domain.images)))
        if sources is not None:
            sources.append(k)
        img = domain.images[k]
        r = int(rng.integers(0, img.shape[0] - size + 1))
        c = int(rng.integers(0, img.shape[1] - size + 1))
        rot, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        for src, dst in ((img, xs), (partner.images[k] if partner else None, ys)):
            if src is None:
                continue
            crop = np.rot90(src[r : r + size, c : c + size], rot)
            dst.append(np.ascontiguousarray(crop[:, ::-1] if flip else crop))
    tx = torch.from_numpy(np.stack(xs)[:, None])
    return (tx, torch.from_numpy(np.stack(ys)[:, None])) if partner else tx


def pair_by_name(noisy_names: list[str], clean: list[np.ndarray], clean_names: list[str]) -> list[np.ndarray]:
    """The clean image of each noisy one, matched by file name (paired training); an error names the unmatched."""
    by_name = dict(zip(clean_names, clean))
    missing = [n for n in noisy_names if n not in by_name]
    if missing:
        raise TrainingError(f"paired mode pairs files by name; no clean file for {missing[:3]}")
    return [by_name[n] for n in noisy_names]
