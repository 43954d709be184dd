"""``emdenoise train``: a training run from folders of TIFFs, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..io import expand_tiffs, read_image
from ._common import HelpFormatter, UsageError, stop_on_interrupt

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a denoiser (CycleGAN on unpaired images, or paired on simulated pairs)",
        description=(
            "Train a generator from noisy images (--noisy, domain A) to clean targets (--clean, domain B). "
            "cyclegan: unpaired, the reference CycleGAN method (targets from 'emdenoise synth'). paired: "
            "supervised on pairs with the same file names (from 'emdenoise simulate' or 'emdenoise scenes'). By default "
            "G_A is fine-tuned from the bundled model and a data-consistency term keeps every output within the noise of "
            "its frame; '--model small --consistency 0' (or --model reference) is the reference method. Writes RUN_DIR/denoiser.safetensors "
            "(for 'emdenoise denoise --model'), latest_net_G_A.pth etc. (reference naming), checkpoint.pt (full state), "
            "loss_log.csv and loss.png. Ctrl-C stops after the current iteration and saves a checkpoint; --resume continues."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--noisy", nargs="+", type=Path, help="noisy TIFFs or folders (domain A)")
    p.add_argument("--clean", nargs="+", type=Path, help="clean target TIFFs or folders (domain B)")
    p.add_argument("-o", "--out", required=True, type=Path, help="run folder")
    p.add_argument("--mode", choices=["cyclegan", "paired", "n2v"], default="cyclegan",
                   help="training method; n2v: self-supervised from the noisy frames alone (structured Noise2Void, no --clean)")
    p.add_argument("--model", choices=["default", "small", "reference"], default="default",
                   help="default: the bundled model's architecture (resnet_6blocks ngf 32, residual, linear output, clip 8, every "
                        "image at its own scale), fine-tuned from the bundled weights; small: resnet_6blocks ngf 16 for a CPU; "
                        "reference: resnet_9blocks ngf 64 for a GPU (the reference CycleGAN's generator)")
    p.add_argument("--init", choices=["bundled", "scratch"], default=None,
                   help="start G_A from the bundled model's weights or from random ones (default: bundled for --model default, "
                        "scratch otherwise)")
    p.add_argument("--consistency", type=float, default=10.0,
                   help="weight of the data-consistency term: the output must explain each noisy frame within its noise at "
                        "the atom-column scale (inventing or erasing a column costs its z^2); 0 turns it off (the reference "
                        "method)")
    p.add_argument("--ngf", type=int, default=None, help="generator width (filters of its first layer; default: the preset's)")
    p.add_argument("--iters", type=int, default=2000, help="iterations")
    p.add_argument("--crop", type=int, default=None, help="crop size in px (default: the model preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per iteration (default: the model preset's)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (constant, then linear decay to 0); default: the preset's (5e-5 for fine-tuning "
                        "the default model, 2e-4, the reference's, otherwise)")
    p.add_argument("--period", type=float, default=None, help="px per lattice period to train at (default: median of the noisy images)")
    p.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=None,
                   help="--no-rescale: train on every image at its own scale (data spanning the periods to work at, e.g. from "
                        "'emdenoise scenes'; the model records the range and denoise resamples only images outside it); "
                        "--rescale: resample every image to one period (default: the preset's; the default preset does not)")
    p.add_argument("--period-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="with --no-rescale: the period range (px) to record (default: 5th-95th percentile of the noisy images' periods)")
    p.add_argument("--final", choices=["tanh", "linear"], default=None,
                   help="the generator's last activation: tanh (reference, output within the input's 0.5-99.5 %% range) or linear "
                        "(room for dopants and particles brighter than the range); default: the preset's")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="the generator adds its output to its input (learns the correction); default: the preset's")
    p.add_argument("--clip", type=float, default=None,
                   help="normalised input is clipped to +-CLIP (hot pixels); 3 clips heavy dopants, 8 keeps them (default: the "
                        "preset's: 8 for default, 3 otherwise)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: mixed precision (autocast) on GPUs with bfloat16 units; fp32 everywhere else")
    p.add_argument("--checkpoint-every", type=int, default=500, help="iterations between checkpoints")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and data on a CPU: same weights)")
    p.add_argument("--resume", action="store_true", help="continue the run in -o from its last checkpoint")
    p.add_argument("--no-select", action="store_true",
                   help="end with the last iteration's model; by default the starting model and every checkpoint are "
                        "scored on the noisy frames (self-supervised, no truth needed) and the best is kept, so a run never "
                        "ends worse than it began (selection.json in the run folder lists the scores)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the fidelity report at the end (the trained model beside the bundled one on your frames and "
                        "the quick fidelity scenes; about half a minute on a CPU)")
    p.set_defaults(func=_cmd_train)


def _read_folder_images(paths: list[Path], what: str) -> tuple[list[np.ndarray], list[str]]:
    files = expand_tiffs(paths)
    if not files:
        raise UsageError(f"no {what} images given")
    images, names = [], []
    for f in files:
        img = read_image(f).data
        images.append(img.astype(np.float32))
        names.append(f.name)
    return images, names


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from ..train import PRESETS, STATE, TrainConfig, TrainEvent, TrainingError, load_run_config
    from ..train_report import train_with_report
    from ..train_data import pair_by_name

    from ..devices import pick_device

    try:
        pick_device(args.device)  # a device this machine lacks is said before any work
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        resumed = load_run_config(args.out) if args.resume else None
    except TrainingError as exc:
        raise UsageError(str(exc)) from None
    if not args.noisy or not (args.clean or (resumed.mode if resumed else args.mode) == "n2v"):
        raise UsageError("--noisy and --clean are both needed (also with --resume); with noisy frames alone use --mode n2v")
    noisy, noisy_names = _read_folder_images(args.noisy, "noisy")
    clean, clean_names = _read_folder_images(args.clean, "clean") if args.clean else ([], [])
    try:
        if resumed is not None:
            cfg = resumed
        else:
            chosen = (("crop", args.crop), ("batch_size", args.batch_size), ("clip", args.clip), ("rescale", args.rescale),
                      ("lr", args.lr))
            overrides = {k: v for k, v in chosen if v is not None}
            gen_cfg = PRESETS[args.model]["generator"]
            overrides["generator"] = replace(gen_cfg, **{k: v for k, v in (("ngf", args.ngf), ("final", args.final),
                                                                           ("residual", args.residual)) if v is not None})
            rescale = overrides.get("rescale", PRESETS[args.model].get("rescale", True))
            if args.period_range and rescale:
                raise UsageError("--period-range goes with --no-rescale (the default preset trains without resampling)")
            init = args.init or ("bundled" if args.model == "default" else "scratch")
            cfg = TrainConfig.from_preset(args.model, mode=args.mode, iterations=args.iters, period=args.period,
                                          device=args.device, checkpoint_every=args.checkpoint_every, seed=args.seed,
                                          precision=args.precision, init=init, lambda_consistency=args.consistency,
                                          select=not args.no_select,
                                          period_range=tuple(args.period_range) if args.period_range else None, **overrides)
        if cfg.mode == "paired":
            clean, clean_names = pair_by_name(noisy_names, clean, clean_names), list(noisy_names)
        gen = train_with_report(noisy, clean, args.out, None if args.resume else cfg, report=not args.no_report,
                                noisy_names=noisy_names, clean_names=clean_names, resume=args.resume)
        result = None
        if args.resume:
            print(f"resuming '{args.out}' with its saved settings ({cfg.mode}, {cfg.iterations} iterations); "
                  "other training options given now are not used", file=sys.stderr)
        bar = tqdm(total=cfg.iterations, desc=f"train {cfg.mode}", unit="it", disable=None)
        last_stage, trained = "", False
        with stop_on_interrupt("stopping at the next safe point (training: after the iteration in progress, with a "
                               "checkpoint)") as stop:
            try:
                while True:
                    try:
                        event = next(gen)
                    except StopIteration as finished:
                        result = finished.value
                        break
                    last_stage = event.stage
                    if not isinstance(event, TrainEvent):  # preparing (noise models), or the report after training
                        if event.stage == "select":  # the run ends with an earlier checkpoint: say which and why
                            bar.write(f"note: {event.message}", file=sys.stderr)
                            continue
                        bar.set_description_str(f"train {cfg.mode}: {event.message}")
                        if stop.is_set():
                            gen.close()
                            break
                        continue
                    trained = True
                    if bar.n == 0:
                        bar.set_description_str(f"train {cfg.mode}")
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
            if last_stage == "report":
                print(f"stopped during the fidelity report; the trained model is saved in {args.out} (run again with "
                      "--resume to make the report)", file=sys.stderr)
            elif (args.out / STATE).is_file():
                print(f"stopped; checkpoint saved in {args.out} (continue with --resume)", file=sys.stderr)
            else:
                print("stopped before the first iteration; nothing was saved", file=sys.stderr)
            return 130
    except TrainingError as exc:
        raise UsageError(str(exc)) from None
    path, report = result
    if args.resume and not trained:
        print(f"the run in '{args.out}' was already complete ({cfg.iterations} of {cfg.iterations} iterations): nothing was "
              "trained; to train longer, start a new run in another folder", file=sys.stderr)
    if report is not None:
        print(f"fidelity report (also in {args.out / 'fidelity_report.md'}):\n{report.text()}")
    print(f"done: {path} (denoise with: emdenoise denoise IN -o OUT --model {path})")
    return 0
