"""What each training mode makes of a user's own frames: the experiment of issue 17.

A microscopist trains on their own noisy frames and a physicist's clean lattice. Here the frames
come from a simulator configuration the default model never saw (the training-style simulator
``simulate``: square, hexagonal and rectangular lattices, periods 10-20 px, doses 3-12
counts/px, 60 % with a dent, scan-row offsets), and the targets from the target-set builder
(``emdenoise synth``: a simulated clean lattice thinned by each frame's dent mask). Every mode
trains on the same data:

* ``reference``: the reference CycleGAN, a small generator from scratch, no consistency term;
* ``reference+consistency``: the same with the data-consistency term (weight 10, the default);
* ``fine-tune``: the default: the bundled model's architecture and weights, CycleGAN with the
  consistency term;
* ``self-supervised``: the same start, structured Noise2Void on the noisy frames alone (no
  targets) with the consistency term; ``self-supervised-scratch``: Noise2Void alone from a small
  random model.

Each trained model, and the bundled model untrained, is then measured on held-out frames of the
same kind (PSNR, column F1, dent error against the truth, share of pixels the consistency map
flags) and on the fidelity benchmark's quick scenes (vacancies filled, dopants found, false atoms
in vacuum). It prints one table.

    python benchmarks/training_fidelity.py --quick          # CPU, a few minutes: a smoke-sized run
    python benchmarks/training_fidelity.py --device cuda    # the full experiment (about 15 min on an H100)

Name the machine with every figure you quote.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def frames(n: int, size: int, seed: int):
    from napari_emdenoise.simulate import simulate

    rng = np.random.default_rng(seed)
    lattices = ("square", "hexagonal", "rectangular")
    out = []
    for i in range(n):
        out.append(simulate(size=(size, size), lattice=lattices[i % 3], period=float(rng.uniform(10, 20)),
                            dose=float(rng.uniform(3, 12)), dents=int(rng.random() < 0.6), dent_depth=0.35,
                            row_offset=0.3, angle=float(rng.uniform(0, 90)), seed=seed + i))
    return out


def targets(noisy: list[np.ndarray], periods: list[float], out: Path, per_mask: int, seed: int) -> list[np.ndarray]:
    from napari_emdenoise.dataset import TargetSpec, Zoom, build_targets
    from napari_emdenoise.io import read_tiff
    from napari_emdenoise.masks import dent_mask
    from napari_emdenoise.simulate import simulate

    lattice = simulate(size=(1024, 1024), period=16.0, dents=0, dose=1000.0, seed=seed).clean
    masks = {f"frame{i}": dent_mask(img) for i, img in enumerate(noisy)}
    zooms = [Zoom(f"{p:.1f}px", period=p) for p in sorted(set(round(p, 1) for p in periods))[:: max(1, len(periods) // 4)]]
    spec = TargetSpec(zooms=zooms, per_mask=per_mask, dent_depth=0.35, seed=seed, lattice_period=16.0)
    files = build_targets(lattice, masks, spec, out)
    return [read_tiff(f).data for f in files if f.parent.name == "trainB"]


def train_mode(name: str, noisy, clean, out: Path, iters: int, device: str, quick: bool, weight: float = 1.0,
               lr: float | None = None) -> Path:
    from napari_emdenoise.jobs import drive
    from napari_emdenoise.train import TrainConfig, train

    common = dict(mode="cyclegan", iterations=iters, device=device, preview_every=0, checkpoint_every=iters, seed=0,
                  **({"lr": lr} if lr else {}))
    if name == "reference":
        cfg = TrainConfig.from_preset("small", lambda_consistency=0.0, **common)
    elif name == "reference+consistency":
        cfg = TrainConfig.from_preset("small", lambda_consistency=weight, **common)
    elif name == "fine-tune":
        cfg = TrainConfig.from_preset("default", init="bundled", lambda_consistency=weight, **common)
    elif name == "self-supervised":
        cfg = TrainConfig.from_preset("default", init="bundled", lambda_consistency=weight, **{**common, "mode": "n2v"})
    elif name == "self-supervised-scratch":
        cfg = TrainConfig.from_preset("small", lambda_consistency=0.0, **{**common, "mode": "n2v"})
    else:
        raise ValueError(name)
    if quick:
        from dataclasses import replace

        cfg = replace(cfg, crop=64, batch_size=2)
    t0 = time.perf_counter()
    path = drive(train(noisy, clean, out / name, cfg))
    print(f"  {name}: {iters} iterations in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def measure(model, held_out, quick: bool) -> dict:
    from napari_emdenoise import fidelity
    from napari_emdenoise.consistency import ConsistencyError, check
    from napari_emdenoise.inference import DenoiseWarning, denoise
    from napari_emdenoise.jobs import drive
    from napari_emdenoise.metrics import score

    psnr, f1, dent, flagged = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DenoiseWarning)
        for sim in held_out:
            out = denoise(sim.noisy, model)
            s = score(out, sim.clean, sim.dent if sim.dent.max() > 0 else None, sim.params.period)
            psnr.append(s.psnr)
            f1.append(s.f1)
            if sim.dent.max() > 0:
                dent.append(s.dent_error)
            try:
                flagged.append(check(sim.noisy, out).share)
            except ConsistencyError:
                flagged.append(float("nan"))
        run = drive(fidelity.iter_fidelity({"m": fidelity.model_method(model)}, quick=quick))
    fid = fidelity.summary(run.rows)[0]
    return {"psnr": float(np.mean(psnr)), "f1_min": float(np.min(f1)), "dent_max": float(np.max(dent)) if dent else float("nan"),
            "flagged": float(np.nanmean(flagged)), "vac_heavy": fid["vacancy_fill_heavy"], "vac_light": fid["vacancy_fill_light"],
            "dopants": f"{fid['dopants_found']}/{fid['dopants']}", "vacuum": fid["false_atoms_vacuum"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized: 12 frames of 192 px, 300 iterations, quick fidelity scenes")
    p.add_argument("--iters", type=int, default=None, help="iterations per mode (default 3000; --quick 300)")
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", nargs="+", default=["reference", "reference+consistency", "fine-tune", "self-supervised",
                                                  "self-supervised-scratch"])
    p.add_argument("--consistency", type=float, default=10.0, help="weight of the consistency term in the modes that use it")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's: 5e-5 fine-tuning, else 2e-4)")
    p.add_argument("--keep", type=Path, default=None, help="copy each trained model here as MODE.safetensors")
    args = p.parse_args(argv)
    iters = args.iters or (300 if args.quick else 3000)
    n, size = (12, 192) if args.quick else (40, 320)
    train_sims = frames(n, size, seed=7000)
    held_out = frames(4 if args.quick else 8, size, seed=7500)
    noisy = [s.noisy for s in train_sims]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean = targets(noisy, [s.params.period for s in train_sims], tmp / "set", 2 if args.quick else 4, seed=1)
        print(f"{len(noisy)} noisy frames, {len(clean)} targets; {platform.processor() or platform.machine()}, "
              f"device {args.device}", file=sys.stderr)
        print("| mode | PSNR dB | column F1 (min) | dent error (max) | flagged share | vacancies filled (heavy / light) | "
              "dopants found | false atoms in vacuum |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in ["bundled (untrained)", *args.modes]:  # each row as soon as its model is trained and measured
            try:
                model = None
                if mode != "bundled (untrained)":
                    model = train_mode(mode, noisy, clean, tmp / "runs", iters, args.device, args.quick, args.consistency,
                                       args.lr)
                    if args.keep:
                        import shutil

                        args.keep.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(model, args.keep / f"{mode}.safetensors")
                r = measure(model, held_out, args.quick)
            except KeyboardInterrupt:  # Ctrl-C, or the GPU session's deadline: the rows printed so far are complete
                print(f"stopped during '{mode}': the rows above are complete", file=sys.stderr)
                return 130
            print(f"| {mode} | {r['psnr']:.2f} | {r['f1_min']:.3f} | {r['dent_max']:.3f} | {100 * r['flagged']:.2f} % | "
                  f"{100 * r['vac_heavy']:.0f} % / {100 * r['vac_light']:.0f} % | {r['dopants']} | {r['vacuum']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
