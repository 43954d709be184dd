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
noisy/clean pairs, e.g. from ``emdenoise simulate``. Self-supervised mode (``n2v``) needs no
clean images: a structured blind-spot scheme (Noise2Void, with the fast-scan neighbours of each
blind spot masked too, as in structured N2V) learns from the noisy frames alone.

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
from dataclasses import replace
from pathlib import Path
from typing import Generator, Sequence

import numpy as np
import torch

from .checkpoints import FORMAT, ModelInfo
from .devices import pick_device
from .lattice import estimate_period
from .runfolder import CONFIG, LOG, LOSS_COLORS, STATE, _check_writable, _plot_losses, load_run_config, loss_curves, save_run
from .jobs import Event
from .train_config import PRESETS, TrainConfig, TrainEvent, TrainingError
from .train_consistency import FrameNoise, frame_noise
from .train_data import _crops, _prepare
from .train_model import ImagePool, _Model

__all__ = ["CONFIG", "LOG", "LOSS_COLORS", "PRESETS", "STATE", "ImagePool", "TrainConfig", "TrainEvent", "TrainingError",
           "load_run_config", "loss_curves", "seconds_per_iteration", "train"]


def seconds_per_iteration(cfg: TrainConfig, steps: int = 2) -> float:
    """The wall time of one training iteration of ``cfg`` on this machine, measured: ``steps`` steps of its networks on
    random crops of its size (consistency term included), after one warm-up step. Data loading, checkpoints and
    previews are left out, so a run takes a little longer (the estimate the Train widget shows before Start)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    device = pick_device(cfg.device)
    model = _Model(replace(cfg, init="scratch"), device)  # the same networks; their starting weights cost nothing
    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.uniform(-1, 1, (2, cfg.batch_size, 1, cfg.crop, cfg.crop)).astype(np.float32)).to(device)
    batch = (crops[0],) if cfg.mode == "n2v" else (crops[0], crops[1])
    noises = [FrameNoise(0.01, 0.001, 1.5, 1.0)] * cfg.batch_size if cfg.lambda_consistency > 0 else None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.step(batch, rng, noises)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.step(batch, rng, noises)
    sync()
    return (time.perf_counter() - t0) / steps


def _bundled():
    """The bundled Denoiser, loaded once per run for fine-tuning and the consistency term's noise models."""
    from .inference import resolve_model

    try:
        return resolve_model(None)
    except FileNotFoundError:
        raise TrainingError("this installation has no bundled model to start from or to fit noise models with; train "
                            "with init 'scratch' and the consistency term off") from None


def _frame_noise(x: np.ndarray, bundled, device: str) -> FrameNoise:
    """The noise model of one prepared noisy frame against the bundled model's output on it."""
    from .inference import denoise
    from .jobs import thread_warnings

    with thread_warnings(None):
        return frame_noise(x, denoise(x, bundled, device=device))


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
    elif (run_dir / CONFIG).exists():
        raise TrainingError(f"'{run_dir}' already holds a run: continue it (resume; CLI: --resume) or choose another folder")
    cfg = cfg or TrainConfig()
    noisy_names = list(noisy_names or [f"noisy {i}" for i in range(len(noisy))])
    clean_names = list(clean_names or [f"clean {i}" for i in range(len(clean))])
    if not noisy:
        raise TrainingError("no noisy images to train on")
    if not clean and cfg.mode != "n2v":
        raise TrainingError("no clean target images to train on (with noisy frames alone, train self-supervised: mode 'n2v')")
    if cfg.mode == "paired" and len(noisy) != len(clean):
        raise TrainingError(f"paired mode needs as many clean as noisy images (got {len(clean)} and {len(noisy)})")
    for kind, images, names in (("noisy", noisy, noisy_names), ("clean", clean, clean_names)):
        for image, name in zip(images, names):
            bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
            if bad:  # one NaN pixel in a crop makes that iteration's loss, and then every weight, NaN
                raise TrainingError(f"the {kind} image '{name}' has {bad} NaN or infinite pixel(s): crop them out or "
                                    "fill them before training")
    bundled = _bundled() if cfg.init == "bundled" or cfg.lambda_consistency > 0 else None
    # every image's period to resample it; without resampling, a sample of them for the range the model is trained on
    sample = noisy if cfg.rescale else noisy[:: max(1, len(noisy) // 64)]
    needed = cfg.rescale or cfg.period is None or cfg.period_range is None
    noisy_periods = [estimate_period(np.asarray(n, dtype=np.float32)).period if np.ndim(n) == 2 else None
                     for n in sample] if needed else []
    found = [p for p in noisy_periods if p]
    if cfg.period is None:
        cfg = replace(cfg, period=float(np.median(found)) if found else None)
    if not cfg.rescale and cfg.period_range is None and found:
        low, high = float(np.percentile(found, 5)), float(np.percentile(found, 95))
        trained = bundled.info.period_range if cfg.init == "bundled" else None
        if trained is not None:  # a fine-tuned model keeps what the bundled one was trained on, and adds these frames
            low, high = min(low, trained[0]), max(high, trained[1])
        cfg = replace(cfg, period_range=(low, high))
    period = cfg.period
    own = noisy_periods if cfg.rescale else None
    if cfg.mode == "paired":
        dom_a, dom_b = _prepare(noisy, noisy_names, period, cfg, partners=clean, periods=own)
    else:
        dom_a, _ = _prepare(noisy, noisy_names, period, cfg, periods=own)
        dom_b = _prepare(clean, clean_names, period, cfg)[0] if cfg.mode == "cyclegan" else None
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = _Model(cfg, device, bundled)  # before anything is written: a model that cannot be built leaves no folder behind
    created = not run_dir.exists()
    _check_writable(run_dir)
    for stale in run_dir.glob(".*.part"):  # half-written files of a run that died mid-write
        stale.unlink(missing_ok=True)
    noises = None
    try:
        if cfg.lambda_consistency > 0:  # each noisy frame's noise model, from the bundled model's faithful output
            noises = []
            for i, x in enumerate(dom_a.images):
                noises.append(_frame_noise(x, bundled, cfg.device))
                yield Event(i + 1, len(dom_a.images), "prepare", f"noise model of frame {i + 1} of {len(dom_a.images)}")
    except BaseException:  # stopped or failed before the run began: no empty folder stays behind
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    info = ModelInfo(config=cfg.generator, norm_low=cfg.norm_low, norm_high=cfg.norm_high, period=period, clip=cfg.clip,
                     period_range=cfg.period_range if not cfg.rescale else None, format=FORMAT,
                     description=f"{cfg.mode} training, {cfg.iterations} iterations, crop {cfg.crop}, seed {cfg.seed}")
    start = 0
    if resume and (run_dir / STATE).is_file():
        start = model.load_state(torch.load(run_dir / STATE, map_location=device, weights_only=True), rng)
    elif resume:  # killed before its first checkpoint: the saved settings start again from iteration 0, as first begun
        yield Event(0, 1, "prepare", f"'{run_dir}' holds no checkpoint yet: starting from iteration 0 with its saved settings")
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
    selector = None
    if cfg.select:  # the starting model is the first candidate: a run never ends worse than it began (train_select)
        from .train_select import Selector

        selector = Selector(run_dir, dom_a.images, cfg.crop, device)
        # not in n2v mode: the score favours a blind-spot network over one that sees each pixel (the quick experiment:
        # a self-supervised checkpoint 0.34 dB under the bundled model's PSNR scored better than it)
        if selector.best is None and cfg.mode != "n2v":
            selector.consider(model.nets["G_A"], start, replace(info, description=f"{info.description}; iteration {start}"))
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = None
    t0 = time.perf_counter()
    it = start
    saved_at = start
    try:
        for it in range(start + 1, cfg.iterations + 1):
            sources: list[int] = []
            if cfg.mode == "cyclegan":
                batch = (_crops(rng, dom_a, cfg.batch_size, cfg.crop, sources=sources).to(device),
                         _crops(rng, dom_b, cfg.batch_size, cfg.crop).to(device))
            elif cfg.mode == "n2v":
                batch = (_crops(rng, dom_a, cfg.batch_size, cfg.crop, sources=sources).to(device),)
            else:
                x, y = _crops(rng, dom_a, cfg.batch_size, cfg.crop, partner=dom_b, sources=sources)
                batch = (x.to(device), y.to(device))
            losses = model.step(batch, rng, [noises[k] for k in sources] if noises else None)
            lr = model.lr()
            model.step_schedulers()
            if writer is None:
                writer = csv.DictWriter(log, fieldnames=["iteration", "lr", *losses])
                if new_log:
                    writer.writeheader()
            writer.writerow({"iteration": it, "lr": lr, **{k: round(v, 6) for k, v in losses.items()}})
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                log.flush()
                save_run(run_dir, model, it, rng, info)
                saved_at = it
                if selector is not None:
                    selector.consider(model.nets["G_A"], it, replace(info, description=f"{info.description}; iteration {it}"))
            preview = None
            if cfg.preview_every and (it % cfg.preview_every == 0 or it == start + 1):
                with torch.no_grad():
                    net = model.nets["G_A"].eval()
                    preview = net(torch.from_numpy(preview_src)[None, None].to(device))[0, 0].float().cpu().numpy()
                    net.train()
            elapsed = time.perf_counter() - t0
            eta = elapsed / (it - start) * (cfg.iterations - it)
            yield TrainEvent(done=it, total=cfg.iterations, losses=losses, lr=lr, elapsed=elapsed, eta=eta, preview=preview)
    except GeneratorExit:  # stopped at a yield, i.e. between two complete iterations: keep the work
        if it > saved_at:
            save_run(run_dir, model, it, rng, info)
        raise
    finally:  # on a crash mid-iteration the last complete checkpoint stays as it was
        log.close()
        _plot_losses(run_dir)
    note = selector.finish(cfg.iterations) if selector is not None and it == cfg.iterations else None
    if note:
        yield Event(1, 1, "select", note)
    return run_dir / "denoiser.safetensors"
