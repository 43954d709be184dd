"""Training: CycleGAN (unpaired) and paired, as one generator of progress events.

The CycleGAN follows the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix)
in method and defaults: generators G_A (A -> B) and G_B, PatchGAN discriminators D_A (on
B) and D_B (on A), least-squares GAN loss, cycle loss weight 10 each way, identity loss
0.5 x the cycle weight, the generators' step before the discriminators' step with each
discriminator loss halved, an image pool of 50, Adam (lr 2e-4, beta1 0.5), a constant
then linearly decaying learning rate, and normal init with gain 0.02. Domain A is the
noisy images, B the clean targets; G_A is the denoiser.

Adapted to microscopy: single channel; each image is mapped to [-1, 1] by its own robust
percentiles (recorded in the model); every image is resampled so its lattice period
matches the model's training period; random crops, flips and 90-degree rotations (a
crystal lattice projected along a zone axis looks alike under them, and noise has no
direction; scan distortions do have one, so they are not augmented).

Paired mode trains one generator supervised (L1, plus an optional LSGAN term) on
noisy/clean pairs, e.g. from ``emdenoise simulate``.

The loop yields a :class:`TrainEvent` per iteration. It writes a full checkpoint
(networks, optimisers, schedulers, image pools, iteration, random states) every
``checkpoint_every`` iterations and when stopped (the generator closed), atomically, so a
crash mid-write leaves the last good one; :func:`train` with ``resume=True`` continues
exactly where it stopped. Generators are also written in the reference naming
(``latest_net_G_A.pth`` ...) and in our ``.safetensors`` format for the Denoise flow.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Generator, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoints import (
    FORMAT,
    ModelInfo,
    save_generator,
    save_reference,
)
from .inference import normalize, pick_device
from .io import atomic_write
from .lattice import estimate_period, resample
from .nets import GeneratorConfig, build_discriminator, build_generator, init_weights

PRESETS = {
    # CPU-friendly: 0.49 M-parameter generators (resnet_6blocks, ngf 16), 96-px crops, batch 4
    "small": dict(generator=GeneratorConfig("resnet_6blocks", ngf=16), ndf=32, crop=96, batch_size=4),
    # the reference CycleGAN's defaults, for a GPU
    "reference": dict(generator=GeneratorConfig("resnet_9blocks", ngf=64), ndf=64, crop=256, batch_size=1),
}


class TrainingError(ValueError):
    """Inputs or settings that cannot train; said before any training starts."""


@dataclass
class TrainConfig:
    mode: str = "cyclegan"  # "cyclegan" or "paired"
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig("resnet_6blocks", ngf=16))
    ndf: int = 32
    n_layers_d: int = 3
    iterations: int = 2000
    decay_from: float = 0.5  # fraction of iterations after which the learning rate decays linearly to 0
    batch_size: int = 4
    crop: int = 96
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0  # lambda_A = lambda_B
    lambda_identity: float = 0.5  # times lambda_cycle
    pool_size: int = 50
    lambda_adv_paired: float = 0.0  # paired mode: weight of the optional LSGAN term
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; for GPUs with bfloat16 units)
    norm_low: float = 0.5
    norm_high: float = 99.5
    period: float | None = None  # px per period the model works at; None: median of the noisy images
    # False: train on every image at its own scale (the data must span the periods to work at); the model records
    # the range of the noisy images' periods and inference resamples only images outside it
    rescale: bool = True
    period_range: tuple[float, float] | None = None  # with rescale False: the range to record (None: estimated)
    clip: float = 3.0  # normalised input clipped to [-clip, clip]; above ~5 leaves heavy dopants unclipped
    checkpoint_every: int = 500
    preview_every: int = 50
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise TrainingError(f"model preset must be one of {sorted(PRESETS)}, not {preset!r}")
        return cls(**{**PRESETS[preset], **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator"] = self.generator.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        pr = d.get("period_range")
        return cls(**{**d, "generator": GeneratorConfig(**d["generator"]), "period_range": tuple(pr) if pr else None})


@dataclass(frozen=True)
class TrainEvent:
    iteration: int
    total: int
    losses: dict
    lr: float
    elapsed: float  # seconds in this session
    eta: float  # seconds left, from this session's speed
    preview: np.ndarray | None = None  # G_A on a fixed noisy crop, on the input's scale
    checkpoint: str | None = None  # path written at this iteration, if any


# --------------------------------------------------------------------------- data
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


def _crops(rng: np.random.Generator, domain: _Domain, n: int, size: int, partner: _Domain | None = None):
    xs, ys = [], []
    for _ in range(n):
        k = int(rng.integers(len(domain.images)))
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


class ImagePool:
    """The reference's history of generated images: once full, a stored image is returned
    (and replaced by the new one) with probability 0.5."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() > 0.5:
                k = int(rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)


# --------------------------------------------------------------------------- the model
class _Model:
    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        g = cfg.generator
        self.nets: dict[str, nn.Module] = {"G_A": init_weights(build_generator(g), seed=cfg.seed)}
        if cfg.mode == "cyclegan":
            self.nets["G_B"] = init_weights(build_generator(g), seed=cfg.seed + 1)
        if cfg.mode == "cyclegan" or cfg.lambda_adv_paired > 0:
            self.nets["D_A"] = init_weights(build_discriminator(g.output_nc, cfg.ndf, cfg.n_layers_d, g.norm), seed=cfg.seed + 2)
        if cfg.mode == "cyclegan":
            self.nets["D_B"] = init_weights(build_discriminator(g.input_nc, cfg.ndf, cfg.n_layers_d, g.norm), seed=cfg.seed + 3)
        for net in self.nets.values():
            net.to(device).train()
        gens = [p for k, n in self.nets.items() if k.startswith("G") for p in n.parameters()]
        discs = [p for k, n in self.nets.items() if k.startswith("D") for p in n.parameters()]
        betas = (cfg.beta1, 0.999)
        self.opt = {"G": torch.optim.Adam(gens, lr=cfg.lr, betas=betas)}
        if discs:
            self.opt["D"] = torch.optim.Adam(discs, lr=cfg.lr, betas=betas)
        keep = int(cfg.iterations * cfg.decay_from)
        rule = lambda it: 1.0 - max(0, it - keep) / float(cfg.iterations - keep + 1)  # noqa: E731 - the reference's rule
        self.sched = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in self.opt.items()}
        self.pools = {"A": ImagePool(cfg.pool_size), "B": ImagePool(cfg.pool_size)}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    @staticmethod
    def _requires_grad(nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    @staticmethod
    def _gan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return nn.functional.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))

    def step(self, batch, rng: np.random.Generator) -> dict:
        return self._cycle(*batch, rng) if self.cfg.mode == "cyclegan" else self._paired(*batch, rng)

    def _cycle(self, real_a: torch.Tensor, real_b: torch.Tensor, rng) -> dict:
        c, n = self.cfg, self.nets
        lam, lam_idt = c.lambda_cycle, c.lambda_cycle * c.lambda_identity
        # generators, with the discriminators frozen
        self._requires_grad([n["D_A"], n["D_B"]], False)
        self.opt["G"].zero_grad(set_to_none=True)
        l1 = nn.functional.l1_loss
        with self._autocast():
            fake_b = n["G_A"](real_a)
            rec_a = n["G_B"](fake_b)
            fake_a = n["G_B"](real_b)
            rec_b = n["G_A"](fake_a)
            idt_a = l1(n["G_A"](real_b), real_b) * lam_idt if lam_idt > 0 else torch.zeros((), device=self.device)
            idt_b = l1(n["G_B"](real_a), real_a) * lam_idt if lam_idt > 0 else torch.zeros((), device=self.device)
            g_a = self._gan(n["D_A"](fake_b), True)
            g_b = self._gan(n["D_B"](fake_a), True)
            cyc_a = l1(rec_a, real_a) * lam
            cyc_b = l1(rec_b, real_b) * lam
        (g_a + g_b + cyc_a + cyc_b + idt_a + idt_b).backward()
        self.opt["G"].step()
        # discriminators, each loss halved, fakes from the pools
        self._requires_grad([n["D_A"], n["D_B"]], True)
        self.opt["D"].zero_grad(set_to_none=True)
        pool_b = self.pools["B"].query(fake_b.float(), rng)
        with self._autocast():
            d_a = (self._gan(n["D_A"](real_b), True) + self._gan(n["D_A"](pool_b.detach()), False)) * 0.5
        d_a.backward()
        pool_a = self.pools["A"].query(fake_a.float(), rng)
        with self._autocast():
            d_b = (self._gan(n["D_B"](real_a), True) + self._gan(n["D_B"](pool_a.detach()), False)) * 0.5
        d_b.backward()
        self.opt["D"].step()
        return {k: float(v.detach()) for k, v in dict(D_A=d_a, G_A=g_a, cycle_A=cyc_a, idt_A=idt_a,
                                                         D_B=d_b, G_B=g_b, cycle_B=cyc_b, idt_B=idt_b).items()}

    def _paired(self, x: torch.Tensor, y: torch.Tensor, rng) -> dict:
        c, n = self.cfg, self.nets
        adv = "D_A" in n
        if adv:
            self._requires_grad([n["D_A"]], False)
        self.opt["G"].zero_grad(set_to_none=True)
        with self._autocast():
            fake = n["G_A"](x)
            l1 = nn.functional.l1_loss(fake, y)
            loss = l1 + (c.lambda_adv_paired * self._gan(n["D_A"](fake), True) if adv else 0.0)
        loss.backward()
        self.opt["G"].step()
        out = {"L1": float(l1.detach())}
        if adv:
            self._requires_grad([n["D_A"]], True)
            self.opt["D"].zero_grad(set_to_none=True)
            with self._autocast():
                d = (self._gan(n["D_A"](y), True) + self._gan(n["D_A"](fake.detach()), False)) * 0.5
            d.backward()
            self.opt["D"].step()
            out["D_A"] = float(d.detach())
        return out

    def lr(self) -> float:
        return self.sched["G"].get_last_lr()[0]

    def step_schedulers(self) -> None:
        for s in self.sched.values():
            s.step()

    # ---------------------------------------------------------------- state
    def state(self, iteration: int, rng: np.random.Generator) -> dict:
        return {
            "iteration": iteration,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "opt": {k: v.state_dict() for k, v in self.opt.items()},
            "sched": {k: v.state_dict() for k, v in self.sched.items()},
            "pools": {k: [t.cpu() for t in p.images] for k, p in self.pools.items()},
            "rng_numpy": json.dumps(rng.bit_generator.state),
            "rng_torch": torch.get_rng_state(),
            "rng_python": json.dumps(random.getstate()),
        }

    def load_state(self, state: dict, rng: np.random.Generator) -> int:
        for k, v in state["nets"].items():
            self.nets[k].load_state_dict(v)
        for k, v in state["opt"].items():
            self.opt[k].load_state_dict(v)
        for k, v in state["sched"].items():
            self.sched[k].load_state_dict(v)
        for k, v in state["pools"].items():
            self.pools[k].images = [t.to(self.device) for t in v]
        rng.bit_generator.state = json.loads(state["rng_numpy"])
        torch.set_rng_state(state["rng_torch"])
        st = json.loads(state["rng_python"])
        random.setstate((st[0], tuple(st[1]), st[2]))
        return int(state["iteration"])


# --------------------------------------------------------------------------- run folder
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
    """Full state (atomic), reference-named networks and our .safetensors denoiser."""
    state_path = atomic_write(run_dir / STATE, lambda tmp: torch.save(model.state(iteration, rng), tmp))
    for name, net in model.nets.items():
        save_reference(run_dir / f"latest_net_{name}.pth", net)
    save_generator(run_dir / "denoiser.safetensors", model.nets["G_A"],
                   replace(info, description=f"{info.description}; iteration {iteration}"))
    return state_path


def load_run_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise TrainingError(f"'{run_dir}' is not a training run folder (no {CONFIG}); start a new run instead")
    return TrainConfig.from_dict(json.loads(path.read_text()))


# --------------------------------------------------------------------------- the loop
def train(
    noisy: Sequence[np.ndarray], clean: Sequence[np.ndarray], run_dir: str | os.PathLike, cfg: TrainConfig | None = None,
    *, noisy_names: Sequence[str] | None = None, clean_names: Sequence[str] | None = None, resume: bool = False,
) -> Generator[TrainEvent, None, Path]:
    """Train and yield a :class:`TrainEvent` per iteration; returns the denoiser's path.

    ``noisy`` is domain A, ``clean`` domain B (paired mode: clean[i] is the truth of
    noisy[i]). With ``resume`` the run folder's configuration and last checkpoint are used.
    Closing the generator saves a checkpoint first.
    """
    run_dir = Path(run_dir)
    if resume:
        cfg = load_run_config(run_dir)
    cfg = cfg or TrainConfig()
    if cfg.mode not in ("cyclegan", "paired"):
        raise TrainingError(f"mode must be 'cyclegan' or 'paired', not {cfg.mode!r}")
    if cfg.precision not in ("fp32", "bf16"):
        raise TrainingError(f"precision must be 'fp32' or 'bf16', not {cfg.precision!r}")
    if cfg.iterations < 1 or cfg.batch_size < 1 or cfg.crop < 16 or cfg.generator.ngf < 1:
        raise TrainingError("iterations, batch size and generator width must be at least 1, and the crop at least 16 px")
    noisy_names = list(noisy_names or [f"noisy {i}" for i in range(len(noisy))])
    clean_names = list(clean_names or [f"clean {i}" for i in range(len(clean))])
    if not noisy:
        raise TrainingError("no noisy images to train on")
    if not clean:
        raise TrainingError("no clean target images to train on")
    if cfg.mode == "paired" and len(noisy) != len(clean):
        raise TrainingError(f"paired mode needs as many clean as noisy images (got {len(clean)} and {len(noisy)})")
    if not cfg.clip > 1:
        raise TrainingError(f"the input clip must be above 1 (normalised units), not {cfg.clip}")
    if cfg.rescale:
        noisy_periods = [estimate_period(np.asarray(n, dtype=np.float32)).period if np.ndim(n) == 2 else None for n in noisy]
    else:  # nothing is resampled: a sample of periods gives the range the model is trained on
        step = max(1, len(noisy) // 64)
        noisy_periods = [estimate_period(np.asarray(n, dtype=np.float32)).period if np.ndim(n) == 2 else None
                         for n in noisy[::step]] if cfg.period is None or cfg.period_range is None else []
    period = cfg.period
    found = [p for p in noisy_periods if p]
    if period is None:
        period = float(np.median(found)) if found else None
        cfg = replace(cfg, period=period)
    if not cfg.rescale and cfg.period_range is None and found:
        cfg = replace(cfg, period_range=(float(np.percentile(found, 5)), float(np.percentile(found, 95))))
    if cfg.period_range is not None and not 0 < cfg.period_range[0] <= cfg.period_range[1]:
        raise TrainingError(f"the period range must be two positive periods in order, not {cfg.period_range}")
    if cfg.mode == "paired":
        dom_a, dom_b = _prepare(noisy, noisy_names, period, cfg, partners=clean, periods=noisy_periods)
    else:
        dom_a, _ = _prepare(noisy, noisy_names, period, cfg, periods=noisy_periods)
        dom_b, _ = _prepare(clean, clean_names, period, cfg)
    _check_writable(run_dir)
    for stale in run_dir.glob(".*.part"):  # half-written files of a run that died mid-write
        stale.unlink(missing_ok=True)
    device = pick_device(cfg.device)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = _Model(cfg, device)
    info = ModelInfo(config=cfg.generator, norm_low=cfg.norm_low, norm_high=cfg.norm_high, period=period, clip=cfg.clip,
                     period_range=cfg.period_range if not cfg.rescale else None, format=FORMAT,
                     description=f"{cfg.mode} training, {cfg.iterations} iterations, crop {cfg.crop}, seed {cfg.seed}")
    start = 0
    if resume:
        if not (run_dir / STATE).is_file():
            raise TrainingError(f"'{run_dir}' holds no checkpoint to resume from")
        start = model.load_state(torch.load(run_dir / STATE, map_location=device, weights_only=True), rng)
    else:
        (run_dir / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    preview_src = dom_a.images[0][: min(256, dom_a.images[0].shape[0]), : min(256, dom_a.images[0].shape[1])]
    preview_src = preview_src[: preview_src.shape[0] // 4 * 4, : preview_src.shape[1] // 4 * 4]
    log_path = run_dir / LOG
    new_log = not log_path.exists() or start == 0
    if not new_log:  # drop rows logged after the checkpoint we resume from
        with open(log_path, newline="") as fh:
            kept = [r for r in csv.reader(fh)]
        kept = kept[:1] + [r for r in kept[1:] if r and int(r[0]) <= start]
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = None
    t0 = time.perf_counter()
    it = start
    saved_at = start
    try:
        for it in range(start + 1, cfg.iterations + 1):
            if cfg.mode == "cyclegan":
                batch = (_crops(rng, dom_a, cfg.batch_size, cfg.crop).to(device), _crops(rng, dom_b, cfg.batch_size, cfg.crop).to(device))
            else:
                x, y = _crops(rng, dom_a, cfg.batch_size, cfg.crop, partner=dom_b)
                batch = (x.to(device), y.to(device))
            losses = model.step(batch, rng)
            lr = model.lr()
            model.step_schedulers()
            if writer is None:
                writer = csv.DictWriter(log, fieldnames=["iteration", "lr", *losses])
                if new_log:
                    writer.writeheader()
            writer.writerow({"iteration": it, "lr": lr, **{k: round(v, 6) for k, v in losses.items()}})
            ckpt = None
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                log.flush()
                ckpt = str(save_run(run_dir, model, it, rng, info))
                saved_at = it
            preview = None
            if cfg.preview_every and (it % cfg.preview_every == 0 or it == start + 1):
                with torch.no_grad():
                    net = model.nets["G_A"].eval()
                    preview = net(torch.from_numpy(preview_src)[None, None].to(device))[0, 0].float().cpu().numpy()
                    net.train()
            elapsed = time.perf_counter() - t0
            eta = elapsed / (it - start) * (cfg.iterations - it)
            yield TrainEvent(it, cfg.iterations, losses, lr, elapsed, eta, preview, ckpt)
    except GeneratorExit:  # stopped at a yield, i.e. between two complete iterations: keep the work
        if it > saved_at:
            save_run(run_dir, model, it, rng, info)
        raise
    finally:  # on a crash mid-iteration the last complete checkpoint stays as it was
        log.close()
        _plot_losses(run_dir)
    return run_dir / "denoiser.safetensors"


LOSS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def loss_curves(series: dict[str, Sequence[float]], width: float, height: float, pad: float) -> dict[str, tuple]:
    """Pixel coordinates (xs, ys) of each loss curve in a width x height plot: each series is
    smoothed over 1% of its length and all share one scale (their 99th percentile at the top)."""
    filled = {k: np.asarray(v, dtype=np.float64) for k, v in series.items() if len(v)}
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

