"""``emdenoise train``: a training run from folders of TIFFs, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..io import expand_tiffs, read_tiff
from ._common import UsageError, stop_on_interrupt

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a denoiser (CycleGAN on unpaired images, or paired on simulated pairs)",
        description=(
            "Train a generator from noisy images (--noisy, domain A) to clean targets (--clean, domain B). "
            "cyclegan: unpaired, the reference CycleGAN method (targets from 'emdenoise synth'). paired: "
            "supervised on pairs with the same file names (from 'emdenoise simulate'). Writes RUN_DIR/denoiser.safetensors "
            "(for 'emdenoise denoise --model'), latest_net_G_A.pth etc. (reference naming), checkpoint.pt (full state), "
            "loss_log.csv and loss.png. Ctrl-C stops after the current iteration and saves a checkpoint; --resume continues."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--noisy", nargs="+", type=Path, help="noisy TIFFs or folders (domain A)")
    p.add_argument("--clean", nargs="+", type=Path, help="clean target TIFFs or folders (domain B)")
    p.add_argument("-o", "--out", required=True, type=Path, help="run folder")
    p.add_argument("--mode", choices=["cyclegan", "paired"], default="cyclegan", help="training method")
    p.add_argument("--model", choices=["small", "reference"], default="small",
                   help="small: resnet_6blocks ngf 16 for a CPU; reference: resnet_9blocks ngf 64 for a GPU")
    p.add_argument("--ngf", type=int, default=None, help="generator width (filters of its first layer; default: the preset's)")
    p.add_argument("--iters", type=int, default=2000, help="iterations")
    p.add_argument("--crop", type=int, default=None, help="crop size in px (default: the model preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per iteration (default: the model preset's)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (constant, then linear decay to 0)")
    p.add_argument("--period", type=float, default=None, help="px per lattice period to train at (default: median of the noisy images)")
    p.add_argument("--no-rescale", action="store_true",
                   help="train on every image at its own scale (data spanning the periods to work at, e.g. from 'emdenoise scenes'); "
                        "the model records the range and denoise resamples only images outside it")
    p.add_argument("--period-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="with --no-rescale: the period range (px) to record (default: 5th-95th percentile of the noisy images' periods)")
    p.add_argument("--final", choices=["tanh", "linear"], default="tanh",
                   help="the generator's last activation: tanh (reference, output within the input's 0.5-99.5 %% range) or linear "
                        "(room for dopants and particles brighter than the range)")
    p.add_argument("--residual", action="store_true", help="the generator adds its output to its input (learns the correction)")
    p.add_argument("--clip", type=float, default=3.0,
                   help="normalised input is clipped to +-CLIP (hot pixels); 3 clips heavy dopants, 8 keeps them")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: mixed precision (autocast) on GPUs with bfloat16 units; fp32 everywhere else")
    p.add_argument("--checkpoint-every", type=int, default=500, help="iterations between checkpoints")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and data on a CPU: same weights)")
    p.add_argument("--resume", action="store_true", help="continue the run in -o from its last checkpoint")
    p.set_defaults(func=_cmd_train)


def _read_folder_images(paths: list[Path], what: str) -> tuple[list[np.ndarray], list[str]]:
    files = expand_tiffs(paths)
    if not files:
        raise UsageError(f"no {what} images given")
    images, names = [], []
    for f in files:
        img = read_tiff(f).data
        images.append(img.astype(np.float32))
        names.append(f.name)
    return images, names


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from ..train import PRESETS, STATE, TrainConfig, TrainingError, load_run_config, train
    from ..train_data import pair_by_name

    if not args.noisy or not args.clean:
        raise UsageError("--noisy and --clean are both needed (also with --resume)")
    noisy, noisy_names = _read_folder_images(args.noisy, "noisy")
    clean, clean_names = _read_folder_images(args.clean, "clean")
    try:
        if args.resume:
            cfg = load_run_config(args.out)
        else:
            overrides = {k: v for k, v in (("crop", args.crop), ("batch_size", args.batch_size)) if v is not None}
            gen_cfg = PRESETS[args.model]["generator"]
            overrides["generator"] = replace(gen_cfg, ngf=args.ngf or gen_cfg.ngf, final=args.final, residual=args.residual)
            if args.period_range and not args.no_rescale:
                raise UsageError("--period-range goes with --no-rescale")
            cfg = TrainConfig.from_preset(args.model, mode=args.mode, iterations=args.iters, lr=args.lr, period=args.period,
                                          device=args.device, checkpoint_every=args.checkpoint_every, seed=args.seed,
                                          precision=args.precision, rescale=not args.no_rescale, clip=args.clip,
                                          period_range=tuple(args.period_range) if args.period_range else None, **overrides)
        if cfg.mode == "paired":
            clean, clean_names = pair_by_name(noisy_names, clean, clean_names), list(noisy_names)
        gen = train(noisy, clean, args.out, None if args.resume else cfg, noisy_names=noisy_names,
                    clean_names=clean_names, resume=args.resume)
        bar = tqdm(total=cfg.iterations, desc=f"train {cfg.mode}", unit="it", disable=None)
        with stop_on_interrupt("training stops after this iteration and saves a checkpoint") as stop:
            try:
                for event in gen:
                    if bar.n == 0:
                        bar.n = event.iteration - 1
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in list(event.losses.items())[:4]}, refresh=False)
                    if stop.is_set():  # closing at a yield ends a complete iteration: the generator saves it
                        gen.close()
                        break
            except KeyboardInterrupt:  # a second Ctrl-C: quit now; the last complete checkpoint stays as it was
                bar.close()
                print(f"stopped at once; {args.out} keeps its last checkpoint, if any", file=sys.stderr)
                return 130
        bar.close()
        if stop.is_set():
            if (args.out / STATE).is_file():
                print(f"stopped; checkpoint saved in {args.out} (continue with --resume)", file=sys.stderr)
            else:
                print("stopped before the first iteration; nothing was saved", file=sys.stderr)
            return 130
    except TrainingError as exc:
        raise UsageError(str(exc)) from None
    print(f"done: {args.out / 'denoiser.safetensors'} (denoise with: emdenoise denoise IN -o OUT --model "
          f"{args.out / 'denoiser.safetensors'})")
    return 0
