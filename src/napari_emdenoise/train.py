"""Training loops that yield progress events (the widget and the CLI drive the same code).

So far: paired (supervised) training of a generator on noisy/clean pairs, e.g. from the
simulator. Inputs and targets are normalised with the *noisy* image's percentiles, the
same mapping :func:`napari_emdenoise.inference.normalize` applies at inference, so a
trained model's output maps back to the input's intensity scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generator, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoints import ModelInfo
from .inference import normalize
from .lattice import estimate_period
from .nets import GeneratorConfig, build_generator, init_weights


@dataclass
class PairedConfig:
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig(netG="resnet_6blocks", ngf=16))
    iterations: int = 300
    batch_size: int = 8
    crop: int = 64
    lr: float = 2e-3
    beta1: float = 0.5
    norm_low: float = 0.5
    norm_high: float = 99.5
    seed: int = 0
    threads: int | None = None


@dataclass(frozen=True)
class TrainEvent:
    iteration: int
    total: int
    loss: float
    lr: float
    elapsed: float


def _prepare_pairs(noisy: Sequence[np.ndarray], clean: Sequence[np.ndarray], cfg: PairedConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(noisy) == 0 or len(noisy) != len(clean):
        raise ValueError(f"need the same, non-zero number of noisy and clean images (got {len(noisy)} and {len(clean)})")
    pairs = []
    for i, (n, c) in enumerate(zip(noisy, clean)):
        n = np.asarray(n, dtype=np.float32)
        c = np.asarray(c, dtype=np.float32)
        if n.shape != c.shape or n.ndim != 2:
            raise ValueError(f"pair {i}: noisy {n.shape} and clean {c.shape} must be 2D images of the same shape")
        if min(n.shape) < cfg.crop:
            raise ValueError(f"pair {i}: image {n.shape} is smaller than the crop size {cfg.crop}")
        x, lo, hi = normalize(n, cfg.norm_low, cfg.norm_high)
        y = (c - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
        pairs.append((x, y.astype(np.float32)))
    return pairs


def _batch(pairs, cfg: PairedConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(cfg.batch_size):
        x, y = pairs[rng.integers(len(pairs))]
        r = rng.integers(0, x.shape[0] - cfg.crop + 1)
        c = rng.integers(0, x.shape[1] - cfg.crop + 1)
        xc, yc = x[r : r + cfg.crop, c : c + cfg.crop], y[r : r + cfg.crop, c : c + cfg.crop]
        k = int(rng.integers(4))  # lattices look alike under 90-degree rotations and flips
        xc, yc = np.rot90(xc, k), np.rot90(yc, k)
        if rng.random() < 0.5:
            xc, yc = xc[:, ::-1], yc[:, ::-1]
        xs.append(np.ascontiguousarray(xc))
        ys.append(np.ascontiguousarray(yc))
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def train_paired(
    noisy: Sequence[np.ndarray], clean: Sequence[np.ndarray], cfg: PairedConfig | None = None
) -> Generator[TrainEvent, None, tuple[nn.Module, ModelInfo]]:
    """Train a generator noisy -> clean with an L1 loss; yields an event per iteration.

    Returns the trained generator (eval mode, CPU) and its ModelInfo, whose ``period``
    is the median estimated lattice period of the noisy images.
    """
    cfg = cfg or PairedConfig()
    pairs = _prepare_pairs(noisy, clean, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = init_weights(build_generator(cfg.generator), seed=cfg.seed).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, 2.0 * (1.0 - i / cfg.iterations)))
    t0 = time.perf_counter()
    for it in range(1, cfg.iterations + 1):
        x, y = _batch(pairs, cfg, rng)
        loss = nn.functional.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        yield TrainEvent(it, cfg.iterations, float(loss.detach()), sched.get_last_lr()[0], time.perf_counter() - t0)
    periods = [p for p in (estimate_period(n).period for n in noisy) if p]
    info = ModelInfo(
        config=cfg.generator, norm_low=cfg.norm_low, norm_high=cfg.norm_high,
        period=float(np.median(periods)) if periods else None, format="napari-emdenoise",
        description=f"paired L1, {cfg.iterations} iterations, batch {cfg.batch_size}, crop {cfg.crop}, seed {cfg.seed}",
    )
    net.eval()
    net.emdenoise_info = info
    return net, info


def run(gen: Generator):
    """Drive a training generator to its end and return what it returns."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
