"""Training speed: iterations per second of the CycleGAN and paired loops.

    python benchmarks/training.py                 # CPU, and CUDA when present
    python benchmarks/training.py --iters 20 --presets small

Each configuration runs ``--iters`` iterations after 2 warm-up iterations on simulated data
(the data preparation is not timed). Prints a Markdown table with iterations per second and
crop megapixels per second (batch x crop^2 x iterations / s, both domains counted once).

The "reference" preset is the reference CycleGAN code's default configuration
(resnet_9blocks, ngf 64, 256-px crops, batch 1); to compare with that code itself, run its
train.py on the same machine (no published figure was at hand when this was written).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from napari_emdenoise.simulate import simulate
from napari_emdenoise.train import PRESETS, TrainConfig, train


def measure(preset: str, mode: str, device: str, iters: int, precision: str = "fp32") -> dict:
    size = 2 * PRESETS[preset]["crop"]
    sims = [simulate(size=size, period=12, dose=5, dents=1, seed=i) for i in range(3)]
    noisy = [s.noisy for s in sims]
    clean = [s.clean for s in sims]
    cfg = TrainConfig.from_preset(preset, mode=mode, iterations=iters + 2, device=device, preview_every=0, precision=precision,
                                  checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        gen = train(noisy, clean, tmp, cfg)
        next(gen)
        next(gen)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            next(gen)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        gen.close()
    return {"preset": preset, "mode": mode, "device": device, "it_s": iters / seconds,
            "mp_s": iters * cfg.batch_size * cfg.crop**2 / 1e6 / seconds, "batch": cfg.batch_size, "crop": cfg.crop,
            "ngf": cfg.generator.ngf, "netG": cfg.generator.netG, "precision": precision}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["small", "reference"], choices=sorted(PRESETS))
    p.add_argument("--modes", nargs="+", default=["cyclegan", "paired"], choices=["cyclegan", "paired"])
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per configuration")
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"], help="bf16: autocast (GPU)")
    args = p.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = [measure(pr, mode, dev, args.iters, prec) for dev in devices for pr in args.presets for mode in args.modes
            for prec in args.precisions]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print("| preset | generator | mode | device | precision | batch x crop | it/s | crop MP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['netG']} ngf {r['ngf']} | {r['mode']} | {r['device']} | {r['precision']} | {r['batch']} x {r['crop']}² | "
              f"{r['it_s']:.2f} | {r['mp_s']:.3f} |")


if __name__ == "__main__":
    main()
